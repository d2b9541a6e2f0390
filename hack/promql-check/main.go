// promql-check validates the chart's Prometheus rules and Grafana dashboard queries with
// Prometheus' own parsers (hack/chart-test.sh runs it; nothing in a cluster parses PromQL
// without the prometheus-operator webhook).
//
//	promql-check rules FILE       a Prometheus rule file (groups:), as rulefmt loads it
//	promql-check dashboard FILE   every "expr" in a Grafana dashboard JSON
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Grafana variables the dashboard uses, replaced by values of the right type before parsing.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$job", ".*")

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: promql-check rules|dashboard FILE")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	var n int
	var errs []error
	switch os.Args[1] {
	case "rules":
		groups, es := rulefmt.ParseFile(os.Args[2], false, model.UTF8Validation, p, slog.Default())
		errs = es
		if groups != nil {
			for _, g := range groups.Groups {
				n += len(g.Rules)
			}
		}
	case "dashboard":
		b, err := os.ReadFile(os.Args[2])
		if err != nil {
			errs = append(errs, err)
			break
		}
		var dash struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			errs = append(errs, err)
			break
		}
		for _, panel := range dash.Panels {
			for _, t := range panel.Targets {
				n++
				if _, err := p.ParseExpr(grafanaVars.Replace(t.Expr)); err != nil {
					errs = append(errs, fmt.Errorf("panel %q: %s: %w", panel.Title, t.Expr, err))
				}
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: promql-check rules|dashboard FILE")
		os.Exit(2)
	}
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "error:", e)
	}
	if len(errs) > 0 || n == 0 {
		os.Exit(1)
	}
	fmt.Printf("%d expressions parse\n", n)
}
