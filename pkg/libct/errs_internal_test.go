package libct

import "errors"

func errorsAs(err, target error) bool { return errors.Is(err, target) }
