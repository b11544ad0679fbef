// Package lint holds tests that read the project's own source code and
// enforce rules the compiler cannot, such as which keys may appear in logs.
package lint
