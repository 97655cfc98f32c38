package xa_test

import (
	"testing"

	"github.com/golcn/golcn/internal/xa"
)

// forbiddenCases double as fuzz seeds. stmt is the expected label ("" when
// allowed).
var forbiddenCases = []struct {
	query string
	stmt  string
}{
	// allowed
	{"", ""},
	{"   \n\t ", ""},
	{"SELECT * FROM t", ""},
	{"select 1", ""},
	{"INSERT INTO t VALUES (1, 'DROP TABLE t')", ""},
	{"UPDATE t SET v = 'x; DROP TABLE t' WHERE id = 1", ""},
	{"UPDATE t SET v = 'it\\'s; DROP' WHERE id = 1", ""},
	{"UPDATE t SET v = 'it''s; DROP' WHERE id = 1", ""},
	{"UPDATE `create` SET `drop` = 1", ""},
	{"DELETE FROM t WHERE id = 1", ""},
	{"REPLACE INTO t VALUES (1, 'a')", ""},
	{"WITH x AS (SELECT 1) SELECT * FROM x", ""},
	{"(SELECT 1) UNION (SELECT 2)", ""},
	{"SAVEPOINT s1", ""},
	{"ROLLBACK TO SAVEPOINT s1", ""},
	{"rollback to s1", ""},
	{"ROLLBACK WORK TO SAVEPOINT s1", ""},
	{"RELEASE SAVEPOINT s1", ""},
	{"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", ""},
	{"SET @autocommit = 1", ""},
	{"SET @`autocommit` = 1", ""},
	{"SET names utf8mb4", ""},
	{"SET v = 'autocommit'", ""},
	{"LOAD DATA INFILE 'x' INTO TABLE t", ""},
	{"ANALYZE SELECT 1", ""},
	{"ANALYZE FORMAT=JSON SELECT 1", ""},
	{"CHECKSUM TABLE t", ""},
	{"DO 1", ""},
	{"CALL p()", ""},
	{"-- DROP TABLE t\nSELECT 1", ""},
	{"# DROP TABLE t\nSELECT 1", ""},
	{"/* DROP TABLE t */ SELECT 1", ""},
	{"SELECT 1 -- ; DROP TABLE t", ""},
	{"SELECT 1 /* ; DROP TABLE t */", ""},
	{"SELECT 1;", ""},
	{";;", ""},
	{"--1", ""},
	{"/* unterminated DROP", ""},
	{"'unterminated; DROP TABLE t", ""},
	// forbidden
	{"CREATE TABLE t2 (i INT)", "CREATE TABLE"},
	{"create temporary table t2 (i int)", "CREATE TABLE"},
	{"CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE VIEW"},
	{"CREATE UNIQUE INDEX i ON t (v)", "CREATE INDEX"},
	{"CREATE DATABASE d", "CREATE DATABASE"},
	{"CREATE USER u", "CREATE USER"},
	{"ALTER TABLE t ADD COLUMN w INT", "ALTER TABLE"},
	{"ALTER ONLINE IGNORE TABLE t ENGINE=InnoDB", "ALTER TABLE"},
	{"DROP TABLE IF EXISTS t", "DROP TABLE"},
	{"DROP TEMPORARY TABLE t", "DROP TABLE"},
	{"RENAME TABLE t TO u", "RENAME TABLE"},
	{"TRUNCATE t", "TRUNCATE"},
	{"TRUNCATE TABLE t", "TRUNCATE TABLE"},
	{"LOCK TABLES t WRITE", "LOCK TABLES"},
	{"lock table t read", "LOCK TABLE"},
	{"UNLOCK TABLES", "UNLOCK TABLES"},
	{"BEGIN", "BEGIN"},
	{"BEGIN WORK", "BEGIN"},
	{"START TRANSACTION", "START TRANSACTION"},
	{"start transaction read only", "START TRANSACTION"},
	{"START SLAVE", "START SLAVE"},
	{"STOP REPLICA", "STOP"},
	{"COMMIT", "COMMIT"},
	{"commit work", "COMMIT"},
	{"ROLLBACK", "ROLLBACK"},
	{"ROLLBACK WORK", "ROLLBACK"},
	{"ROLLBACK AND CHAIN", "ROLLBACK"},
	{"SET autocommit = 1", "SET autocommit"},
	{"SET AUTOCOMMIT=0", "SET autocommit"},
	{"SET @@autocommit = 1", "SET autocommit"},
	{"SET @@session.autocommit = 1", "SET autocommit"},
	{"SET SESSION autocommit = ON", "SET autocommit"},
	{"SET names utf8mb4, autocommit = 1", "SET autocommit"},
	{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION"},
	{"SET PASSWORD = PASSWORD('x')", "SET PASSWORD"},
	{"GRANT SELECT ON *.* TO u", "GRANT"},
	{"REVOKE ALL ON *.* FROM u", "REVOKE"},
	{"ANALYZE TABLE t", "ANALYZE TABLE"},
	{"ANALYZE LOCAL TABLE t", "ANALYZE TABLE"},
	{"OPTIMIZE TABLE t", "OPTIMIZE"},
	{"REPAIR TABLE t", "REPAIR"},
	{"CHECK TABLE t", "CHECK"},
	{"FLUSH TABLES", "FLUSH"},
	{"RESET MASTER", "RESET"},
	{"CACHE INDEX t IN c", "CACHE INDEX"},
	{"LOAD INDEX INTO CACHE t", "LOAD INDEX"},
	{"INSTALL PLUGIN p SONAME 'p.so'", "INSTALL"},
	{"UNINSTALL PLUGIN p", "UNINSTALL"},
	{"CHANGE MASTER TO MASTER_HOST='h'", "CHANGE MASTER"},
	{"BACKUP STAGE START", "BACKUP"},
	{"XA START 'a'", "XA"},
	{"XA COMMIT 'a'", "XA"},
	// comments, executable comments, several statements
	{"  /* hi */ -- x\n # y\n DROP TABLE t", "DROP TABLE"},
	{"/*!40101 SET autocommit=0 */", "SET autocommit"},
	{"/*!DROP TABLE t*/", "DROP TABLE"},
	{"/*M!100500 CREATE TABLE t2 (i INT) */", "CREATE TABLE"},
	{"SELECT 1; DROP TABLE t", "DROP TABLE"},
	{"INSERT INTO t VALUES (1, 'a');COMMIT", "COMMIT"},
	{"SELECT ';'; TRUNCATE t", "TRUNCATE"},
	{"SELECT `a;b`; TRUNCATE t", "TRUNCATE"},
	{"SELECT 1 # c\n; BEGIN", "BEGIN"},
	{"--\tx\nCOMMIT", "COMMIT"},
	{"\ufeffx", ""},
}

func TestForbiddenInXA(t *testing.T) {
	for _, c := range forbiddenCases {
		stmt, bad := xa.ForbiddenInXA(c.query)
		if stmt != c.stmt || bad != (c.stmt != "") {
			t.Errorf("ForbiddenInXA(%q) = %q, %v; want %q, %v", c.query, stmt, bad, c.stmt, c.stmt != "")
		}
	}
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func FuzzForbiddenInXA(f *testing.F) {
	for _, c := range forbiddenCases {
		f.Add(c.query)
	}
	f.Fuzz(func(t *testing.T, q string) {
		stmt, bad := xa.ForbiddenInXA(q)
		if bad != (stmt != "") {
			t.Fatalf("ForbiddenInXA(%q) = %q, %v: label and verdict disagree", q, stmt, bad)
		}
		// Keyword matching ignores case, and a leading comment changes nothing.
		if s2, b2 := xa.ForbiddenInXA(asciiUpper(q)); b2 != bad {
			t.Fatalf("ForbiddenInXA(%q) = %v but upper-cased = %q, %v", q, bad, s2, b2)
		}
		if s2, b2 := xa.ForbiddenInXA("/* c */ -- c\n" + q); s2 != stmt || b2 != bad {
			t.Fatalf("ForbiddenInXA(%q) = %q, %v but with a leading comment = %q, %v", q, stmt, bad, s2, b2)
		}
	})
}
