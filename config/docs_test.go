package config

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docRows returns the rows of docs/configuration.md's tables whose first
// cell is a backquoted key, as trimmed cells by key.
func docRows(t *testing.T) (string, map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		key := strings.Trim(cells[0], "`")
		if _, dup := rows[key]; dup {
			t.Errorf("docs: two rows for %s", key)
		}
		rows[key] = cells
	}
	return string(b), rows
}

// TestDocsTable keeps docs/configuration.md in step with ManagerKeys and
// ClientKeys: one row per key with its env, flag and default, and no row
// for a key that does not exist.
func TestDocsTable(t *testing.T) {
	_, rows := docRows(t)
	keys := append(ManagerKeys(), ClientKeys()...)
	known := map[string]bool{}
	for _, k := range keys {
		known[k.Name] = true
		cells, ok := rows[k.Name]
		if !ok {
			t.Errorf("docs/configuration.md has no row for %s", k.Name)
			continue
		}
		def := "—"
		if k.Default != "" {
			def = "`" + k.Default + "`"
		}
		want := []string{"`" + k.Name + "`", "`" + k.Env + "`", "`--" + k.Flag + "`", def}
		if len(cells) != 5 {
			t.Errorf("docs row for %s has %d cells, want 5 (key | env | flag | default | meaning)", k.Name, len(cells))
			continue
		}
		for i, w := range want {
			if cells[i] != w {
				t.Errorf("docs row for %s: cell %d is %s, want %s", k.Name, i, cells[i], w)
			}
		}
		if cells[4] == "" {
			t.Errorf("docs row for %s has no meaning", k.Name)
		}
	}
	for key := range rows {
		if !known[key] {
			t.Errorf("docs/configuration.md documents %s, which no setting has", key)
		}
	}
}

// TestDocsExamples loads the example files of docs/configuration.md.
func TestDocsExamples(t *testing.T) {
	doc, _ := docRows(t)
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) != 2 {
		t.Fatalf("want 2 yaml examples (TxManager, client), found %d", len(blocks))
	}
	for _, b := range blocks {
		path := writeConfig(t, b[1])
		var err error
		if strings.HasPrefix(b[1], "client:") {
			_, err = loadClient([]string{"--config", path}, []string{"LCN_CLIENT_TOKEN=t"}, io.Discard)
		} else {
			_, err = loadManager([]string{"--config", path}, []string{"LCN_REDIS_PASSWORD=p"}, io.Discard)
		}
		if err != nil {
			t.Errorf("docs example does not load: %v\n%s", err, b[1])
		}
	}
}
