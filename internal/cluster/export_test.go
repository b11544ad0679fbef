package cluster

// crash drops the node's NATS connection without a goodbye, as a killed
// process would (the server sees the socket close).
func (n *Node) crash() {
	n.leaving.Store(true)
	close(n.stop)
	<-n.done
	<-n.fdone
	n.nc.Close()
}
