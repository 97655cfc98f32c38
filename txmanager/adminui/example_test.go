package adminui_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/golcn/golcn/txmanager/adminui"
)

// A server mounts the page at /admin/ and lets its REST API accept the
// page's sessions: any request needs Authenticate, a state-changing one
// also CheckCSRF.
func Example() {
	sum := sha256.Sum256([]byte("a long random admin secret"))
	ui, err := adminui.New(adminui.Config{Enabled: true, SecretSHA256: hex.EncodeToString(sum[:])}, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := ui.Authenticate(r)
		switch {
		case !ok:
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		case r.Method != http.MethodGet && !ui.CheckCSRF(r):
			http.Error(w, "missing or wrong X-CSRF-Token", http.StatusForbidden)
		default:
			fmt.Fprintf(w, "hello %s", who)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/admin/", ui.Handler())
	mux.Handle("/v1/", api)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	show := func(resp *http.Response, err error) {
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))
	}
	show(client.Get(srv.URL + "/v1/overview"))
	resp, err := client.PostForm(srv.URL+"/admin/login", url.Values{"secret": {"a long random admin secret"}})
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("login", resp.StatusCode)
	show(client.Get(srv.URL + "/v1/overview"))
	show(client.Post(srv.URL+"/v1/groups/x/retry", "application/json", nil))
	// Output:
	// 401 unauthorized
	// login 200
	// 200 hello admin
	// 403 missing or wrong X-CSRF-Token
}
