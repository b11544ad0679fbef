package push

import "errors"

// ErrConfig is wrapped by every error Config.Validate and New return. The
// message after it names the environment variable or flag at fault and
// never contains secret material.
var ErrConfig = errors.New("push: bad configuration")
