// Package evloop is a small set of event loops over the operating system's
// poller (epoll on Linux): each loop owns the sockets registered with it,
// calls them back on readiness, runs tasks posted from other goroutines and
// fires timers, all on one goroutine. A socket with nothing to do costs the
// loop a slot in a slice and nothing else: no goroutine, stack or buffer.
//
// # Model
//
// A Group holds about one Loop per core. A Loop is one goroutine that
// sleeps in epoll_wait until a socket is ready, a task is posted or the
// earliest timer is due; it never spins and has no tick: the wait's
// timeout is the time to the next timer, or forever when there is none.
//
//   - Sockets are level-triggered and registered with Add from the loop's
//     own goroutine (usually inside a posted task). Their Handler is called
//     with the ready events.
//   - Post queues a Task from any goroutine and wakes the loop (an eventfd
//     write) only if it sleeps; a task posted while the loop is busy costs
//     a lock and an append. Tasks run after the batch of ready sockets, so
//     everything a batch queued for a socket is written in one go.
//   - Timers are kept in a min-heap per loop, armed, moved and stopped only
//     on the loop. A heap rather than a hashed wheel: the loop sleeps
//     exactly until the next deadline (a wheel needs a tick or a search for
//     its next busy slot), and arming is O(log n) with n the loop's
//     connections, which for the timers of a WebSocket (a heartbeat per
//     interval, a deadline per stalled message or write) is far below the
//     cost of the system calls around it.
//   - Read buffers belong to the loop (Buf): a handler reads into it and
//     must be done with it before it returns.
//
// Everything except Post, Group.Pick and Group.Close must be called on the
// loop's goroutine (from a Handler, a Task or a timer callback).
//
// On systems other than Linux, NewGroup returns ErrUnsupported and callers
// keep a goroutine per connection.
package evloop
