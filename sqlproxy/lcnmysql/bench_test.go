package lcnmysql_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/golcn/golcn/internal/testenv"
	"github.com/golcn/golcn/sqlproxy/lcnmysql"
)

// BenchmarkDriver measures the proxy driver's overhead outside any group:
// the same statements through "mysql" (raw) and "lcn-mysql" (proxy) on one
// schema of the private MariaDB, one connection at a time.
func BenchmarkDriver(b *testing.B) {
	mdb := testenv.SharedMariaDB(b)
	_, dsn := mdb.CreateDatabase(b)
	setup, err := sql.Open("mysql", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer setup.Close()
	const rows = 100
	values := make([]string, rows)
	for i := range values {
		values[i] = fmt.Sprintf("(%d, 0)", i+1)
	}
	for _, q := range []string{
		`CREATE TABLE bench (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB`,
		`INSERT INTO bench (id, v) VALUES ` + strings.Join(values, ", "),
	} {
		if _, err := setup.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}

	stmts := []struct {
		name string
		run  func(db *sql.DB, id int) error
	}{
		{"point-select", func(db *sql.DB, id int) error {
			var v int64
			return db.QueryRow(`SELECT v FROM bench WHERE id = ?`, id).Scan(&v)
		}},
		{"update", func(db *sql.DB, id int) error {
			_, err := db.Exec(`UPDATE bench SET v = v + 1 WHERE id = ?`, id)
			return err
		}},
		{"tx-update", func(db *sql.DB, id int) error {
			tx, err := db.Begin()
			if err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE bench SET v = v + 1 WHERE id = ?`, id); err != nil {
				_ = tx.Rollback()
				return err
			}
			return tx.Commit()
		}},
	}
	// Both pools are opened and warmed up before any measurement, and each
	// statement is measured raw then proxy back to back, so that a fresh
	// server's warm-up or later drift does not favour either driver.
	drivers := []struct {
		label string
		db    *sql.DB
	}{{"raw", nil}, {"proxy", nil}}
	for i, name := range []string{"mysql", lcnmysql.DriverName} {
		db, err := sql.Open(name, dsn)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		drivers[i].db = db
	}
	for range 200 {
		for _, d := range drivers {
			for _, st := range stmts {
				if err := st.run(d.db, 1); err != nil {
					b.Fatalf("warm-up %s %s: %v", d.label, st.name, err)
				}
			}
		}
	}
	for _, st := range stmts {
		for _, d := range drivers {
			b.Run(d.label+"/"+st.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := st.run(d.db, i%rows+1); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
