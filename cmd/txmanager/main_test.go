package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With no flags beyond a data directory and a port, the TxManager runs on
// its embedded store, answers /readyz, and shuts down on cancel.
func TestRunEmbeddedDefaults(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"}, nil, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("txmanager did not start")
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["status"] != "ready" {
		t.Fatalf("/readyz: %d %v", resp.StatusCode, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "txmanager.db")); err != nil {
		t.Fatalf("embedded store file: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("txmanager did not shut down")
	}
}

// A bad setting stops the program with a message naming the key.
func TestRunBadConfigNamesKey(t *testing.T) {
	for _, tc := range []struct {
		args, env []string
		want      string
	}{
		{[]string{"--group-timeout", "30x"}, nil, "group_timeout"},
		{nil, []string{"LCN_STORE=floppy"}, "store"},
		{[]string{"--store", "redis"}, nil, "redis.addr"},
		{nil, []string{"LCN_RETRY_MIN=1m", "LCN_RETRY_MAX=1s"}, "retry_min"},
		{[]string{"--store", "redis", "--redis-addr", "127.0.0.1:1"}, nil, "redis.addr"},
	} {
		err := run(context.Background(), append(tc.args, "--data-dir", t.TempDir()), tc.env, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("args %v env %v: err %v, want one naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}
