// Package relay is the routing core: the /v1/server and /v1/client
// endpoints, pairing phones with the binary that holds their server-id,
// forwarding frames both ways, close directives and notices, grace and
// reclaim, health, and the drain on shutdown.
//
// # Data path
//
// socket -> peer reader -> router -> other side's queue -> its writer ->
// socket. A phone's frame is read into a buffer with room in front, checked
// to be exactly one JSON value, and the routing envelope is written around
// it in place, so the phone's bytes reach the binary unchanged and uncopied.
// A binary's envelope is parsed without decoding; the phone's queue takes a
// slice of the same buffer holding exactly the bytes of "frame".
//
// # Seams
//
// The core talks to binaries and phones only through the Binary and Phone
// interfaces, and records who holds what through Directory. On one node the
// Directory is the in-memory registry and Binary/Phone are local
// connections; a cluster backend can return handles to connections living on
// other nodes without changing the core. Push wakes leave through PushSink.
//
// # Concurrency
//
// Each connection has one goroutine (its reader, which also owns its
// life) plus a writer that exists only while it has something to write.
// The Server tracks every connection so that Shutdown can close and wait
// for all of them.
package relay
