package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// allowedKeys are the only attribute keys production code may log. The
// contract allows server-ids, conn_ids, device names, remote IPs, close
// codes and event names; never frames, envelopes, tokens, push tokens, keys
// or whole headers. Adding a key here is a review decision.
var allowedKeys = map[string]bool{
	"server_id": true, "conn_id": true, "device": true, "remote": true, "code": true,
	"grace": true, "phones": true, "notice": true, "path": true, "err": true, "error": true,
	"queued_bytes": true, "role": true, "addr": true, "version": true, "drain_timeout": true,
	"cert_file": true, "key_file": true, "not_after": true,
	"platform": true, "outcome": true, "status": true, "reason": true, "token_fp": true,
	"duration": true, "endpoint": true, "limit": true, "project": true,
	// push: outcome details (status and reason code only), never tokens or keys
	"ms": true, "stage": true, "cause": true, "in_flight": true,
	"fcm": true, "apns": true, "fcm_project": true, "apns_topic": true, "apns_url": true,
	// ACME: the CA's error type and redacted explanation, never a key, token or key authorization
	"domain": true, "acme_error": true, "detail": true, "failures": true, "retry_in": true, "renew_at": true,
	"not_before": true, "clock_behind": true, "cached_directory": true, "expires_in": true,
	"kept_as": true, // the cache entry an unusable account key was moved to (a file name)
	"stack":   true, // a recovered panic's stack trace (function names and offsets)
	// cluster: node ids and cluster name (operator-chosen or random), never NATS URLs or credentials
	"node": true, "cluster": true, "why": true, "orphaned_phones": true, "to": true, "ids": true,
}

// levelMethods are slog's logging methods: msg first, then key/value pairs.
var levelMethods = map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true}

// attrFuncs are slog's attribute constructors: key first.
var attrFuncs = map[string]bool{"String": true, "Int": true, "Int64": true, "Uint64": true, "Float64": true,
	"Bool": true, "Time": true, "Duration": true, "Any": true, "Group": true}

var eventName = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

func TestLogKeysAreAllowed(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pos := fset.Position(call.Pos())
			name := sel.Sel.Name
			switch {
			case levelMethods[name] && len(call.Args) > 0 && isStringLit(call.Args[0]):
				checked++
				msg, _ := strconv.Unquote(call.Args[0].(*ast.BasicLit).Value)
				if !eventName.MatchString(msg) {
					t.Errorf("%s: log event %q is not a snake_case event name", pos, msg)
				}
				checkPairs(t, pos, call, call.Args[1:])
			case name == "With" && isLoggerish(sel.X):
				checked++
				checkPairs(t, pos, call, call.Args)
			case attrFuncs[name] && isIdent(sel.X, "slog") && len(call.Args) > 0:
				checked++
				checkKey(t, pos, call.Args[0])
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d logging calls found: is the walk looking at the right tree?", checked)
	}
}

// checkPairs checks the keys of alternating key/value arguments. A spread
// argument hides its keys, so it is refused.
func checkPairs(t *testing.T, pos token.Position, call *ast.CallExpr, args []ast.Expr) {
	t.Helper()
	if call.Ellipsis.IsValid() {
		t.Errorf("%s: logging call spreads a slice; write its keys out so they can be checked", pos)
		return
	}
	for i := 0; i < len(args); i++ {
		if c, ok := args[i].(*ast.CallExpr); ok {
			if s, ok := c.Fun.(*ast.SelectorExpr); ok && isIdent(s.X, "slog") && attrFuncs[s.Sel.Name] {
				continue // an slog.Attr, checked where it is built
			}
		}
		checkKey(t, pos, args[i])
		i++ // skip the value
	}
}

func checkKey(t *testing.T, pos token.Position, e ast.Expr) {
	t.Helper()
	if !isStringLit(e) {
		t.Errorf("%s: log key is not a string literal", pos)
		return
	}
	k, _ := strconv.Unquote(e.(*ast.BasicLit).Value)
	if !allowedKeys[k] {
		t.Errorf("%s: log key %q is not in the allow-list", pos, k)
	}
}

func isStringLit(e ast.Expr) bool {
	b, ok := e.(*ast.BasicLit)
	return ok && b.Kind == token.STRING
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// isLoggerish reports whether x looks like a logger value (log, logger,
// s.log, c.log, …), so unrelated With methods are not checked.
func isLoggerish(x ast.Expr) bool {
	switch v := x.(type) {
	case *ast.Ident:
		return strings.Contains(strings.ToLower(v.Name), "log")
	case *ast.SelectorExpr:
		return strings.Contains(strings.ToLower(v.Sel.Name), "log")
	}
	return false
}

// TestAllowListRefusesSecrets guards the allow-list itself.
func TestAllowListRefusesSecrets(t *testing.T) {
	for _, k := range []string{"token", "frame", "envelope", "header", "headers", "key", "secret",
		"credentials", "access_token", "authorization", "body", "payload", "jwt", "user_agent"} {
		if allowedKeys[k] {
			t.Errorf("allow-list contains %q", k)
		}
	}
}
