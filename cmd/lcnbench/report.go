package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is a run's results; its JSON form is what --json writes.
type Report struct {
	Time        time.Time `json:"time"`
	GoVersion   string    `json:"go_version"`
	CPUs        int       `json:"cpus"`
	WarmupMS    int64     `json:"warmup_ms"`
	DurationMS  int64     `json:"duration_ms"`
	Rounds      int       `json:"rounds"`
	Conserved   bool      `json:"money_conserved"`
	Results     []*Result `json:"results"`
	order       []cell
	concurrency []int
	rows        []string
	modes       []string
	samples     map[cell][]sample
}

// Result is one cell: TPS is the median over rounds, the latencies are
// over every measured transfer of every round, Tax is 1 - TPS/baseline TPS
// (absent for the baseline, or without one).
type Result struct {
	Mode        string    `json:"mode"`
	Rows        string    `json:"rows"`
	Concurrency int       `json:"concurrency"`
	TPS         float64   `json:"tps"`
	RoundTPS    []float64 `json:"round_tps"`
	P50MS       float64   `json:"p50_ms"`
	P99MS       float64   `json:"p99_ms"`
	Transfers   int       `json:"transfers"`
	Errors      int       `json:"errors"`
	Tax         *float64  `json:"tax,omitempty"`
}

func newReport(o Options) *Report {
	return &Report{Time: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		WarmupMS: o.Warmup.Milliseconds(), DurationMS: o.Duration.Milliseconds(), Rounds: o.Rounds,
		concurrency: o.Concurrency, rows: o.Rows, modes: o.Modes, samples: make(map[cell][]sample)}
}

func (r *Report) add(c cell, s sample) {
	if _, ok := r.samples[c]; !ok {
		r.order = append(r.order, c)
	}
	r.samples[c] = append(r.samples[c], s)
	r.finish()
}

// finish computes Results from the samples so far.
func (r *Report) finish() {
	r.Results = r.Results[:0]
	byCell := make(map[cell]*Result)
	for _, c := range r.order {
		res := &Result{Mode: c.mode, Rows: c.rows, Concurrency: c.conc}
		var lat []time.Duration
		for _, s := range r.samples[c] {
			res.RoundTPS = append(res.RoundTPS, math.Round(s.tps*10)/10)
			res.Errors += s.errors
			lat = append(lat, s.latencies...)
		}
		slices.Sort(lat)
		res.Transfers = len(lat)
		res.TPS = median(res.RoundTPS)
		res.P50MS = ms(percentile(lat, 0.50))
		res.P99MS = ms(percentile(lat, 0.99))
		byCell[c] = res
		r.Results = append(r.Results, res)
	}
	for c, res := range byCell {
		if b := byCell[cell{mode: modeBaseline, rows: c.rows, conc: c.conc}]; b != nil && c.mode != modeBaseline && b.TPS > 0 {
			t := math.Round((1-res.TPS/b.TPS)*1000) / 1000
			res.Tax = &t
		}
	}
	slices.SortStableFunc(r.Results, func(a, b *Result) int {
		if d := slices.Index(r.rows, a.Rows) - slices.Index(r.rows, b.Rows); d != 0 {
			return d
		}
		if d := slices.Index(r.modes, a.Mode) - slices.Index(r.modes, b.Mode); d != 0 {
			return d
		}
		return a.Concurrency - b.Concurrency
	})
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

// OK reports whether the money was conserved and no transfer failed.
func (r *Report) OK() bool {
	if !r.Conserved {
		return false
	}
	for _, res := range r.Results {
		if res.Errors > 0 {
			return false
		}
	}
	return true
}

// printTable prints the results as a Markdown table.
func (r *Report) printTable(w io.Writer) {
	fmt.Fprintf(w, "\n| mode | rows | concurrency | TPS | p50 ms | p99 ms | tax |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, res := range r.Results {
		tax := "–"
		if res.Tax != nil {
			tax = fmt.Sprintf("%.0f%%", *res.Tax*100)
		}
		errs := ""
		if res.Errors > 0 {
			errs = fmt.Sprintf(" (%d errors)", res.Errors)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.0f%s | %.1f | %.1f | %s |\n", res.Mode, res.Rows, res.Concurrency, res.TPS, errs, res.P50MS, res.P99MS, tax)
	}
	fmt.Fprintf(w, "\n%d round(s) of %v measured per cell, TPS median over rounds; %d CPUs, %s; money conserved: %v\n",
		r.Rounds, time.Duration(r.DurationMS)*time.Millisecond, r.CPUs, r.GoVersion, r.Conserved)
}

func (r *Report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// svg draws throughput against concurrency: one panel per rows choice,
// one line per mode, a shared y axis.
func (r *Report) svg() []byte {
	const (
		panelW, panelH = 360.0, 260.0
		left, right    = 60.0, 20.0
		top, bottom    = 40.0, 50.0
	)
	colors := map[string]string{modeBaseline: "#555555", modeLCN: "#1f77b4", modeXA: "#d62728"}
	width := float64(len(r.rows))*(panelW+left+right) + 120
	height := top + panelH + bottom
	var maxTPS float64
	for _, res := range r.Results {
		maxTPS = max(maxTPS, res.TPS)
	}
	yMax := niceCeil(maxTPS)
	concs := slices.Clone(r.concurrency)
	slices.Sort(concs)
	xOf := func(i int) float64 {
		if len(concs) == 1 {
			return panelW / 2
		}
		return float64(i) * panelW / float64(len(concs)-1)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for p, rows := range r.rows {
		ox := left + float64(p)*(panelW+left+right)
		fmt.Fprintf(&b, `<g transform="translate(%.0f,%.0f)">`+"\n", ox, top)
		fmt.Fprintf(&b, `<text x="%.0f" y="-16" text-anchor="middle" font-size="14" font-weight="bold">%s rows</text>`+"\n", panelW/2, html.EscapeString(rows))
		for i := 0; i <= 5; i++ {
			v := yMax * float64(i) / 5
			y := panelH - panelH*float64(i)/5
			fmt.Fprintf(&b, `<line x1="0" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", panelW, y, y)
			fmt.Fprintf(&b, `<text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%.0f</text>`+"\n", y, v)
		}
		for i, c := range concs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", xOf(i), panelH+18, c)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">concurrency</text>`+"\n", panelW/2, panelH+38)
		fmt.Fprintf(&b, `<text transform="translate(-45,%.0f) rotate(-90)" text-anchor="middle">transfers/s</text>`+"\n", panelH/2)
		for _, mode := range r.modes {
			var pts []string
			for i, c := range concs {
				for _, res := range r.Results {
					if res.Mode == mode && res.Rows == rows && res.Concurrency == c {
						y := panelH
						if yMax > 0 {
							y = panelH - panelH*res.TPS/yMax
						}
						pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(i), y))
						fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s conc %d: %.0f/s</title></circle>`+"\n",
							xOf(i), y, colors[mode], mode, rows, c, res.TPS)
					}
				}
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[mode], strings.Join(pts, " "))
		}
		b.WriteString("</g>\n")
	}
	lx := float64(len(r.rows))*(panelW+left+right) + 10
	for i, mode := range r.modes {
		y := top + 10 + float64(i)*20
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.0f" y2="%.0f" stroke="%s" stroke-width="2"/>`+"\n", lx, lx+20, y, y, colors[mode])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" dominant-baseline="middle">%s</text>`+"\n", lx+26, y, mode)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
