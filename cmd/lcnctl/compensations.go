package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/golcn/golcn/txmanager"
)

func compensationsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "compensations", Aliases: []string{"comp"},
		Short: "List, retry and resolve compensation markers (work the TxManager could not finish)", RunE: needSubcommand}
	cmd.AddCommand(compListCmd(g), compRetryCmd(g), compResolveCmd(g))
	return cmd
}

func compListCmd(g *globals) *cobra.Command {
	var status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List compensation markers, oldest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			var l txmanager.CompensationList
			raw, err := c.call(cmd.Context(), "GET", "/v1/compensations", url.Values{"status": {status}}, nil, &l)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			return printMarkers(g, l.Compensations)
		},
	}
	cmd.Flags().StringVar(&status, "status", "open", "open, resolved or all")
	return cmd
}

func printMarkers(g *globals, ms []txmanager.MarkerView) error {
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		res := "-"
		if r := m.Resolution; r != nil {
			res = fmt.Sprintf("by %s at %s: %s", r.By, ts(r.At), r.Reason)
		}
		rows = append(rows, []string{m.ID, m.Kind, m.Status, m.Service, ts(m.Created), m.Detail, res})
	}
	return table(g.out, []string{"ID", "KIND", "STATUS", "SERVICE", "CREATED", "DETAIL", "RESOLUTION"}, rows)
}

func compRetryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Push phase 2 of the marker's group again now",
		Args:  exactArgs(1, "one marker id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			var m txmanager.MarkerView
			raw, err := c.call(cmd.Context(), "POST", "/v1/compensations/"+url.PathEscape(args[0])+"/retry", nil, nil, &m)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			fmt.Fprintf(g.out, "phase 2 of group %s pushed again; marker %s is %s\n", m.Group, m.ID, m.Status)
			return nil
		},
	}
}

func compResolveCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "resolve ID --reason TEXT",
		Short: "Mark a marker resolved; the reason is kept with who resolved it and when",
		Args:  exactArgs(1, "one marker id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageError{errors.New("--reason must say why the marker is resolved")}
			}
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			var m txmanager.MarkerView
			raw, err := c.call(cmd.Context(), "POST", "/v1/compensations/"+url.PathEscape(args[0])+"/resolve", nil,
				map[string]string{"reason": reason}, &m)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			if r := m.Resolution; r != nil {
				fmt.Fprintf(g.out, "marker %s resolved by %s at %s\n", m.ID, r.By, ts(r.At))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the marker is resolved (required)")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}
