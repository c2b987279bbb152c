package dbrouterprom_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/extra/dbrouterprom"
	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

func ExampleNewCollector() {
	// The histogram is optional: it times every statement, by node and route.
	durations, err := dbrouterprom.NewStatementHistogram()
	if err != nil {
		fmt.Println(err)
		return
	}
	// With PostgreSQL: dbrouter.Open("pgx", primaryDSN, replicaDSNs, …).
	// Here the nodes are fakes, which only answer pings.
	driver, err := fakedriver.Register(fakedriver.New("primary"), fakedriver.New("replica1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	db, err := dbrouter.Open(driver, "primary", []string{"replica1"}, dbrouter.WithDialect(dbrouter.Generic()),
		dbrouter.WithNames("db1", "db2"), dbrouter.WithStatementHook(durations.Observe))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(dbrouterprom.NewCollector(db), durations)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// http.ListenAndServe("127.0.0.1:9187", mux)

	var name string
	if err := db.QueryRow("SELECT name FROM users WHERE id = 1").Scan(&name); err != nil {
		fmt.Println(err)
		return
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	lines := bufio.NewScanner(rec.Body)
	for lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "dbrouter_node_primary") || strings.HasPrefix(line, "dbrouter_statements_total") ||
			strings.HasPrefix(line, "dbrouter_statement_duration_seconds_count") {
			fmt.Println(line)
		}
	}
	// Output:
	// dbrouter_node_primary{node="db1"} 1
	// dbrouter_node_primary{node="db2"} 0
	// dbrouter_statement_duration_seconds_count{node="db2",route="read"} 1
	// dbrouter_statements_total{node="db1",route="read"} 0
	// dbrouter_statements_total{node="db1",route="write"} 0
	// dbrouter_statements_total{node="db2",route="read"} 1
	// dbrouter_statements_total{node="db2",route="write"} 0
}
