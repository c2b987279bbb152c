package patroni_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/dbrouter/dbrouter/patroni"
)

// New takes the DSN every member shares, with no host, and some or all of
// the members' REST API URLs. With dbrouter.OpenDiscovered the DB follows
// the cluster:
//
//	db, err := dbrouter.OpenDiscovered("pgx", src)
func ExampleNew() {
	src, err := patroni.New("postgres://app:secret@/app?sslmode=require",
		"http://10.0.0.1:8008", "http://10.0.0.2:8008")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(src) // never the DSN or its password
	// Output:
	// patroni.Source(http://10.0.0.1:8008, http://10.0.0.2:8008)
}

// Discover by hand, as OpenDiscovered calls it. (Not run: nothing answers
// on these addresses.)
func ExampleSource_Discover() {
	src, err := patroni.New("postgres://app:secret@/app?sslmode=require",
		"http://10.0.0.1:8008", "http://10.0.0.2:8008")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	members, err := src.Discover(ctx)
	if errors.Is(err, patroni.ErrUnreachable) {
		fmt.Println(err) // one line per REST URL: what it did
		return
	}
	for _, m := range members {
		fmt.Println(m.Name, m.Primary, m.NoLoadBalance) // m.DSN holds the password: don't print it
	}
}

// A DSN that names a host is refused: Patroni says where each member is.
func ExampleNew_configError() {
	_, err := patroni.New("postgres://app:secret@db1/app", "http://10.0.0.1:8008")
	var ce *patroni.ConfigError
	fmt.Println(errors.Is(err, patroni.ErrInvalidConfig), errors.As(err, &ce) && ce.Field == "dsn")
	// Output:
	// true true
}

// REST APIs behind TLS with a private CA, asked through a proxy that wants
// basic authentication, each given 500 ms.
func ExampleNewWithOptions() {
	roots := x509.NewCertPool() // add the CA of restapi.certfile: roots.AppendCertsFromPEM(caPEM)
	src, err := patroni.NewWithOptions("user=app password=secret dbname=app sslmode=verify-full",
		[]string{"https://pg1.internal:8008", "https://pg2.internal:8008", "https://pg3.internal:8008"},
		patroni.WithTLSConfig(&tls.Config{RootCAs: roots}),
		patroni.WithBasicAuth("dbrouter", "rest-api-password"),
		patroni.WithRequestTimeout(500*time.Millisecond),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(src)
	// Output:
	// patroni.Source(https://pg1.internal:8008, https://pg2.internal:8008, https://pg3.internal:8008)
}
