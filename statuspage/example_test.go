package statuspage_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/statuspage"
)

func ExampleHandler() {
	// With PostgreSQL: dbrouter.Open("pgx", primaryDSN, replicaDSNs). Here
	// the nodes are fakes, which only answer pings.
	driver, err := fakedriver.Register(fakedriver.New("primary"), fakedriver.New("replica1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	db, err := dbrouter.Open(driver, "primary", []string{"replica1"},
		dbrouter.WithDialect(dbrouter.Generic()), dbrouter.WithNames("db1", "db2"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	// The page at /dbrouter/, its JSON at /dbrouter/status.json.
	mux := http.NewServeMux()
	mux.Handle("/dbrouter/", http.StripPrefix("/dbrouter", statuspage.Handler(db)))
	// http.ListenAndServe("127.0.0.1:8080", mux)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/dbrouter/status.json", nil))
	var status struct {
		Primary string
		Nodes   []struct{ Name, Role, State string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &status); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	fmt.Println("primary:", status.Primary)
	for _, n := range status.Nodes {
		fmt.Println(n.Name, n.Role, n.State)
	}
	// Output:
	// 200 application/json
	// primary: db1
	// db1 primary up
	// db2 replica up
}
