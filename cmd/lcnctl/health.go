package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func healthCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Check the TxManager's liveness (/healthz) and readiness (/readyz); exit 1 unless ready",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newClient(false)
			if err != nil {
				return err
			}
			type check struct {
				Endpoint string          `json:"endpoint"`
				OK       bool            `json:"ok"`
				Answer   json.RawMessage `json:"answer,omitempty"`
				Error    string          `json:"error,omitempty"`
			}
			var checks []check
			var failed error
			for _, p := range []string{"/healthz", "/readyz"} {
				raw, err := c.do(cmd.Context(), "GET", p, nil, nil)
				ch := check{Endpoint: p, OK: err == nil, Answer: raw}
				if err != nil {
					var ae *apiError
					if !errors.As(err, &ae) {
						return err // unreachable
					}
					ch.Error = err.Error()
					failed = fmt.Errorf("%s: %w", p, err)
				}
				checks = append(checks, ch)
			}
			if g.output == "json" {
				raw, _ := json.Marshal(map[string]any{"checks": checks})
				if err := printJSON(g.out, raw); err != nil {
					return err
				}
			} else {
				rows := [][]string{}
				for _, ch := range checks {
					status := "ok"
					detail := string(ch.Answer)
					if !ch.OK {
						status, detail = "FAIL", ch.Error
					}
					rows = append(rows, []string{ch.Endpoint, status, detail})
				}
				if err := table(g.out, []string{"CHECK", "STATUS", "DETAIL"}, rows); err != nil {
					return err
				}
			}
			if failed != nil {
				return fmt.Errorf("not ready: %w", failed)
			}
			return nil
		},
	}
}
