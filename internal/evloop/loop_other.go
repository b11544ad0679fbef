//go:build !linux

package evloop

// Event bits (unused where there is no loop).
const (
	EventIn  = 0x1
	EventOut = 0x4
	EventErr = 0x8
	EventHup = 0x10
)

// Loop is not available on this system.
type Loop struct{}

// NewGroup reports ErrUnsupported: there is no event loop here.
func NewGroup(int) (*Group, error) { return nil, ErrUnsupported }

// Close does nothing.
func (g *Group) Close() {}

// Post panics: no loop exists here.
func (l *Loop) Post(Task) { panic(ErrUnsupported) }

// Buf, Count, Add, Modify, Remove, Arm and Stop are never called here.
func (l *Loop) Buf() []byte                            { return nil }
func (l *Loop) Count() int                             { return 0 }
func (l *Loop) Add(int, uint32, Handler) (Slot, error) { return -1, ErrUnsupported }
func (l *Loop) Modify(int, Slot, uint32) error         { return ErrUnsupported }
func (l *Loop) Remove(int, Slot)                       {}
func (l *Loop) Arm(*Timer, int64)                      {}
func (l *Loop) Stop(*Timer)                            {}
