package txmanager

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// openAPIDoc is the part of docs/openapi.yaml the test reads.
type openAPIDoc struct {
	OpenAPI string                    `yaml:"openapi"`
	Paths   map[string]map[string]any `yaml:"paths"`
}

// TestOpenAPIMatchesRoutes holds docs/openapi.yaml and the routes Handler
// registers (Server.routes, the list Handler itself walks) together: every
// documented route is in the file with its method, and every path and
// method of the file is served. It also checks that every $ref resolves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Errorf("openapi: %q, want 3.0.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}

	srv := newTestServer(t, Config{}, WithAdminUI(fakeUI{}))
	served := map[string]bool{}
	for _, rt := range srv.routes() {
		if !rt.documented {
			if strings.HasPrefix(rt.path, "/v1/") {
				t.Errorf("route %s %s under /v1 is not marked documented", rt.method, rt.path)
			}
			continue
		}
		if rt.method == "" {
			t.Errorf("documented route %s has no method", rt.path)
			continue
		}
		key := rt.method + " " + rt.path
		served[key] = true
		if !documented[key] {
			t.Errorf("route %s is served but not in docs/openapi.yaml", key)
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("docs/openapi.yaml documents %s, which the server does not serve", key)
		}
	}
	if len(served) < 15 {
		t.Errorf("only %d routes seen", len(served))
	}

	// Every $ref points at a component that exists.
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var refs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(tree)
	for _, ref := range refs {
		var node any = tree
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, ok := node.(map[string]any)
			if !ok {
				node = nil
				break
			}
			node = m[part]
		}
		if node == nil {
			t.Errorf("$ref %s does not resolve", ref)
		}
	}
	if len(refs) == 0 || !slices.Contains(refs, "#/components/schemas/Error") {
		t.Errorf("no $ref to the Error schema found")
	}
}
