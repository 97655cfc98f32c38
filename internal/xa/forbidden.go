package xa

import "strings"

// ForbiddenInXA reports whether query contains a statement that must not
// run inside an XA branch on MySQL/MariaDB, because it commits implicitly
// or the server refuses it in an ACTIVE XA transaction (XAER_RMFAIL, or
// error 1568 for SET TRANSACTION). stmt names the statement by its leading
// keywords (for example "CREATE TABLE", "LOCK TABLES", "SET autocommit") for
// an error message.
//
// It is a conservative lexical classifier, not a parser. It skips white
// space and comments (/* */, "-- ", #), reads the text of executable
// comments (/*! */, /*M! */) as code, skips quoted strings and identifiers,
// and checks every statement of a multi-statement query (split at ';').
// Keywords match case-insensitively. Flagged:
//
//   - DDL: CREATE, ALTER, DROP, RENAME, TRUNCATE (including CREATE INDEX and
//     temporary tables, which MariaDB would accept: the branch mode is not
//     the place for them);
//   - transaction control: BEGIN, START (TRANSACTION, SLAVE, REPLICA), COMMIT,
//     ROLLBACK (but not ROLLBACK [WORK] TO [SAVEPOINT]), XA, SET with
//     autocommit, SET TRANSACTION without a scope, LOCK and UNLOCK TABLES;
//   - accounts: GRANT, REVOKE, SET PASSWORD;
//   - administration: ANALYZE (but not ANALYZE SELECT/INSERT/UPDATE/
//     DELETE/REPLACE/FORMAT=, MariaDB's explain-and-run), CHECK TABLE,
//     OPTIMIZE, REPAIR, FLUSH, RESET, CACHE INDEX, LOAD INDEX, INSTALL,
//     UNINSTALL, CHANGE MASTER/REPLICATION, STOP, BACKUP (MariaDB BACKUP STAGE).
//
// Not flagged: LOAD DATA and LOAD XML (they commit implicitly only for NDB
// tables, which MariaDB lacks), SAVEPOINT, RELEASE SAVEPOINT, SET SESSION
// TRANSACTION, and CALL/EXECUTE, whose effect it cannot see (the server
// still rejects DDL run through them with XAER_RMFAIL). String literals are
// assumed to use backslash escapes (the default sql_mode).
//
// Safe for concurrent use; it never panics.
func ForbiddenInXA(query string) (stmt string, forbidden bool) {
	l := lexer{s: query}
	for {
		toks, more := l.statement()
		if label, bad := classify(toks); bad {
			return label, true
		}
		if !more {
			return "", false
		}
	}
}

// token kinds: a word is an upper-cased keyword/identifier; anything else
// (punctuation, a quoted string, a variable) is kept as a marker.
type token struct {
	word  string // upper-cased, "" if not a word
	punct byte   // for non-words: the character, or 'q' for a quoted string, '@' for a variable
}

type stmtTokens struct {
	head       []token // the first few tokens
	autocommit bool    // the word AUTOCOMMIT appears anywhere (not as a user variable)
}

const headLen = 6

type lexer struct {
	s string
	i int
}

// statement lexes up to the next top-level ';' and reports whether more
// input follows it.
func (l *lexer) statement() (st stmtTokens, more bool) {
	add := func(t token) {
		if len(st.head) < headLen {
			st.head = append(st.head, t)
		}
	}
	s := l.s
	for l.i < len(s) {
		c := s[l.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.i++
		case c == ';':
			l.i++
			return st, true
		case c == '#':
			l.skipLine()
		case c == '-' && l.i+1 < len(s) && s[l.i+1] == '-' && (l.i+2 == len(s) || s[l.i+2] <= ' '):
			l.skipLine()
		case c == '/' && l.i+1 < len(s) && s[l.i+1] == '*':
			l.i += 2
			switch {
			case l.i < len(s) && s[l.i] == '!':
				l.i++ // executable comment: its text is code
				l.skipDigits()
			case l.i+1 < len(s) && (s[l.i] == 'M' || s[l.i] == 'm') && s[l.i+1] == '!':
				l.i += 2 // MariaDB executable comment
				l.skipDigits()
			default:
				if end := strings.Index(s[l.i:], "*/"); end >= 0 {
					l.i += end + 2
				} else {
					l.i = len(s)
				}
			}
		case c == '*' && l.i+1 < len(s) && s[l.i+1] == '/':
			l.i += 2 // end of an executable comment (or a syntax error): white space
		case c == '\'' || c == '"' || c == '`':
			l.skipQuoted(c)
			add(token{punct: 'q'})
		case c == '@':
			if l.i+1 < len(s) && s[l.i+1] == '@' {
				l.i += 2 // system variable: the name that follows is a word
				add(token{punct: '@'})
				continue
			}
			l.i++ // user variable: @name, @'name', @`name`
			if l.i < len(s) && (s[l.i] == '\'' || s[l.i] == '"' || s[l.i] == '`') {
				l.skipQuoted(s[l.i])
			} else {
				for l.i < len(s) && isWordByte(s[l.i]) {
					l.i++
				}
			}
			add(token{punct: 'v'})
		case isWordByte(c):
			start := l.i
			for l.i < len(s) && isWordByte(s[l.i]) {
				l.i++
			}
			w := strings.ToUpper(s[start:l.i])
			if w == "AUTOCOMMIT" {
				st.autocommit = true
			}
			add(token{word: w})
		default:
			l.i++
			add(token{punct: c})
		}
	}
	return st, false
}

func (l *lexer) skipLine() {
	if end := strings.IndexByte(l.s[l.i:], '\n'); end >= 0 {
		l.i += end + 1
	} else {
		l.i = len(l.s)
	}
}

func (l *lexer) skipDigits() {
	for l.i < len(l.s) && l.s[l.i] >= '0' && l.s[l.i] <= '9' {
		l.i++
	}
}

// skipQuoted skips a quoted string or identifier starting at l.i. A doubled
// quote is two adjacent quoted parts; backslash escapes apply in strings.
func (l *lexer) skipQuoted(q byte) {
	l.i++
	for l.i < len(l.s) {
		c := l.s[l.i]
		switch {
		case c == '\\' && q != '`':
			l.i += 2
		case c == q:
			l.i++
			return
		default:
			l.i++
		}
	}
	l.i = min(l.i, len(l.s))
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// objectKinds name what a DDL statement acts on, for the label.
var objectKinds = map[string]bool{
	"TABLE": true, "TABLES": true, "INDEX": true, "VIEW": true, "DATABASE": true, "SCHEMA": true,
	"PROCEDURE": true, "FUNCTION": true, "TRIGGER": true, "EVENT": true, "USER": true, "ROLE": true,
	"SERVER": true, "SEQUENCE": true, "TABLESPACE": true, "PACKAGE": true, "SYNONYM": true,
}

func classify(st stmtTokens) (string, bool) {
	h := st.head
	word := func(i int) string {
		if i < len(h) {
			return h[i].word
		}
		return ""
	}
	w0 := word(0)
	switch w0 {
	case "":
		return "", false
	case "CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE":
		for i := 1; i < len(h); i++ {
			if objectKinds[h[i].word] {
				return w0 + " " + h[i].word, true
			}
		}
		return w0, true
	case "GRANT", "REVOKE", "OPTIMIZE", "REPAIR", "FLUSH", "RESET", "INSTALL", "UNINSTALL",
		"BEGIN", "COMMIT", "XA", "STOP", "BACKUP", "CHECK":
		return w0, true
	case "START", "LOCK", "UNLOCK", "CACHE", "CHANGE":
		if w1 := word(1); w1 != "" {
			return w0 + " " + w1, true
		}
		return w0, true
	case "ROLLBACK":
		i := 1
		if word(i) == "WORK" {
			i++
		}
		if word(i) == "TO" {
			return "", false // ROLLBACK TO SAVEPOINT: stays in the transaction
		}
		return "ROLLBACK", true
	case "ANALYZE":
		switch word(1) {
		case "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "FORMAT":
			return "", false // MariaDB's ANALYZE <statement>: runs it
		}
		return "ANALYZE TABLE", true
	case "LOAD":
		if word(1) == "INDEX" {
			return "LOAD INDEX", true
		}
		return "", false // LOAD DATA / LOAD XML
	case "SET":
		switch {
		case st.autocommit:
			return "SET autocommit", true
		case word(1) == "PASSWORD":
			return "SET PASSWORD", true
		case word(1) == "TRANSACTION":
			return "SET TRANSACTION", true
		}
	}
	return "", false
}
