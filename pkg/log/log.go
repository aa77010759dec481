// Package log carries a logrus entry through a context, so every line a job
// writes has the request id, job and object fields of the call it serves.
package log

import (
	"context"

	"github.com/sirupsen/logrus"
)

// Field keys shared across the code base.
const (
	FieldPodID       = "pod_id"
	FieldContainerID = "container_id"
	FieldImage       = "image"
	FieldJob         = "job"
	FieldJobID       = "job_id"
	FieldRequestID   = "request_id"
	FieldMethod      = "method"
	FieldDuration    = "duration"
	FieldError       = "error"
)

type loggerKey struct{}

// L is the root logger entry.
var L = logrus.NewEntry(logrus.StandardLogger())

// G returns the logger carried by ctx, or L.
func G(ctx context.Context) *logrus.Entry {
	if ctx != nil {
		if e, ok := ctx.Value(loggerKey{}).(*logrus.Entry); ok {
			return e
		}
	}
	return L
}

// WithLogger returns a context carrying entry.
func WithLogger(ctx context.Context, entry *logrus.Entry) context.Context {
	return context.WithValue(ctx, loggerKey{}, entry)
}

// WithFields returns a context whose logger has the extra fields.
func WithFields(ctx context.Context, fields logrus.Fields) context.Context {
	return WithLogger(ctx, G(ctx).WithFields(fields))
}
