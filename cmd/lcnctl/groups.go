package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/golcn/golcn/txmanager"
)

func groupsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "groups", Short: "List, show and retry transaction groups", RunE: needSubcommand}
	cmd.AddCommand(groupsListCmd(g), groupsShowCmd(g), groupsRetryCmd(g))
	return cmd
}

func groupsListCmd(g *globals) *cobra.Command {
	var state, service, after, before, attention, cursor string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List groups, newest first (one page; --cursor for the next)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"state": state, "service": service, "created_after": after,
				"created_before": before, "attention": attention, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit != 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			var l txmanager.GroupList
			raw, err := c.call(cmd.Context(), "GET", "/v1/groups", q, nil, &l)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			rows := make([][]string, 0, len(l.Groups))
			for _, s := range l.Groups {
				att := s.Attention
				if s.OpenCompensations > 0 {
					att = fmt.Sprintf("%d open compensation(s); %s", s.OpenCompensations, att)
				}
				rows = append(rows, []string{s.ID, s.State, s.StarterService, strings.Join(s.Services, ","),
					strconv.Itoa(s.Branches), ts(s.Created), att})
			}
			if err := table(g.out, []string{"ID", "STATE", "STARTER", "SERVICES", "BRANCHES", "CREATED", "ATTENTION"}, rows); err != nil {
				return err
			}
			if l.NextCursor != "" {
				fmt.Fprintf(g.out, "more: lcnctl groups list --cursor %s (with the same filters)\n", l.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only groups in this state (ACTIVE, PREPARING, COMMITTING, COMMITTED, ROLLING_BACK, ROLLED_BACK)")
	f.StringVar(&service, "service", "", "only groups started by this service or with a branch of it")
	f.StringVar(&after, "created-after", "", "only groups created at or after this RFC 3339 time")
	f.StringVar(&before, "created-before", "", "only groups created before this RFC 3339 time")
	f.StringVar(&attention, "attention", "", "true: only groups needing attention; false: only the others")
	f.IntVar(&limit, "limit", 0, "page size (1-500; default 50)")
	f.StringVar(&cursor, "cursor", "", "the cursor printed at the end of the previous page")
	return cmd
}

func groupsShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a group: branches, timeline, compensation markers",
		Args:  exactArgs(1, "one group id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			var d txmanager.GroupDetail
			raw, err := c.call(cmd.Context(), "GET", "/v1/groups/"+url.PathEscape(args[0]), nil, nil, &d)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			return printDetail(g, d)
		},
	}
}

func printDetail(g *globals, d txmanager.GroupDetail) error {
	w := g.out
	for _, kv := range [][2]string{{"id", d.ID}, {"state", d.State}, {"starter", d.StarterService}, {"created", ts(d.Created)},
		{"deadline", ts(d.Deadline)}, {"decided", tsp(d.Decided)}, {"finished", tsp(d.Finished)}, {"reason", d.Reason}, {"attention", d.Attention}} {
		fmt.Fprintf(w, "%-10s %s\n", kv[0]+":", oneLine(kv[1]))
	}
	fmt.Fprintln(w, "\nBranches:")
	rows := [][]string{}
	for _, b := range d.Branches {
		rows = append(rows, []string{b.ID, b.Service, b.Instance, b.Datasource, b.Mode, b.State, b.Reason})
	}
	if err := table(w, []string{"ID", "SERVICE", "INSTANCE", "DATASOURCE", "MODE", "STATE", "REASON"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nTimeline:")
	rows = [][]string{}
	for _, e := range d.Timeline {
		rows = append(rows, []string{ts(e.At), e.Kind, e.Branch, e.State, e.Reason})
	}
	if err := table(w, []string{"AT", "EVENT", "BRANCH", "STATE", "REASON"}, rows); err != nil {
		return err
	}
	if len(d.Compensations) > 0 {
		fmt.Fprintln(w, "\nCompensations:")
		return printMarkers(g, d.Compensations)
	}
	return nil
}

func groupsRetryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "retry ID",
		Short: "Push phase 2 (the decision) of a decided, unfinished group again now",
		Args:  exactArgs(1, "one group id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.newClient(true)
			if err != nil {
				return err
			}
			var d txmanager.GroupDetail
			raw, err := c.call(cmd.Context(), "POST", "/v1/groups/"+url.PathEscape(args[0])+"/retry", nil, nil, &d)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(g.out, raw)
			}
			fmt.Fprintf(g.out, "phase 2 pushed again: group %s is %s\n", d.ID, d.State)
			return nil
		},
	}
}
