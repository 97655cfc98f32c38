package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golcn/golcn/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestQuick runs the --quick benchmark against the test binary's private
// MariaDB and Redis, so that the command cannot rot: every cell measured,
// no transfer failed, money conserved, table, JSON and chart produced.
func TestQuick(t *testing.T) {
	mdb := testenv.SharedMariaDB(t)
	rds := testenv.SharedRedis(t)
	dir := t.TempDir()
	o := quickOptions(Options{MySQLDSN: mdb.DSN(""), RedisAddr: rds.Addr, SchemaPrefix: "lcnbench_test_",
		Modes: []string{modeBaseline, modeLCN, modeXA}, Rows: []string{rowsHot, rowsSpread},
		JSONPath: filepath.Join(dir, "out.json"), SVGPath: filepath.Join(dir, "out.svg")})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rep, err := run(context.Background(), o, log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("report not OK: conserved %v, results %+v", rep.Conserved, rep.Results)
	}
	if want := len(o.Modes) * len(o.Rows) * len(o.Concurrency); len(rep.Results) != want {
		t.Fatalf("%d results, want %d", len(rep.Results), want)
	}
	for _, r := range rep.Results {
		if r.TPS <= 0 || r.P50MS <= 0 || r.P99MS < r.P50MS {
			t.Errorf("implausible result %+v", r)
		}
		if (r.Tax == nil) != (r.Mode == modeBaseline) {
			t.Errorf("%s %s %d: tax %v", r.Mode, r.Rows, r.Concurrency, r.Tax)
		}
	}
	var table bytes.Buffer
	rep.printTable(&table)
	if !strings.Contains(table.String(), "| xa | spread | 8 |") || !strings.Contains(table.String(), "money conserved: true") {
		t.Errorf("table:\n%s", table.String())
	}
	raw, err := os.ReadFile(o.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Results) != len(rep.Results) || !back.Conserved {
		t.Fatalf("JSON: %v, %d results", err, len(back.Results))
	}
	svg, err := os.ReadFile(o.SVGPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(svg, []byte("<svg ")) || bytes.Count(svg, []byte("<polyline")) != len(o.Modes)*len(o.Rows) {
		t.Errorf("chart:\n%s", svg)
	}
}

func TestValidate(t *testing.T) {
	base := Options{Modes: []string{modeLCN}, Rows: []string{rowsHot}, Concurrency: []int{1}, Duration: 1, Rounds: 1}
	if err := base.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Options){
		"mode":        func(o *Options) { o.Modes = []string{"2pc"} },
		"rows":        func(o *Options) { o.Rows = []string{"cold"} },
		"concurrency": func(o *Options) { o.Concurrency = []int{0} },
		"rounds":      func(o *Options) { o.Rounds = 0 },
		"empty":       func(o *Options) { o.Modes = nil },
	} {
		o := base
		mod(&o)
		if err := o.validate(); err == nil {
			t.Errorf("%s: accepted %+v", name, o)
		}
	}
}
