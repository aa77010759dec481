package engine

import (
	"encoding/json"
	"net/http"
)

// ServeHTTP lists jobs as JSON, newest first. Query parameters filter:
// name=pull, status=failed, object=image:busybox.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := []JobInfo{}
	for _, j := range e.Jobs() {
		if (q.Get("name") == "" || q.Get("name") == j.Name) &&
			(q.Get("status") == "" || q.Get("status") == string(j.Status)) &&
			(q.Get("object") == "" || q.Get("object") == j.Object) {
			out = append(out, j)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
