module github.com/pyrycode/pyrycode-relay

go 1.26.0

require (
	github.com/coder/websocket v1.8.14
	github.com/gorilla/websocket v1.5.3
	go.uber.org/goleak v1.3.0
	golang.org/x/crypto v0.59.0
)

require (
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)
