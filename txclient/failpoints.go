package txclient

import (
	"net/http"
	"strconv"
	"time"

	"github.com/golcn/golcn/internal/failpoint"
)

// fpBranchDelay is the fault suite's hanging-branch point (S2), called only
// in failpoint builds: when it fires, the incoming call of group id waits
// failpoint.Delay (past the group's timeout) before the middleware goes
// on, and the returned writer notes the status the late call got. The
// wait does not end with the caller: a late call is exactly one whose
// caller may have given up.
func fpBranchDelay(w http.ResponseWriter, id string) (http.ResponseWriter, func()) {
	if !failpoint.Fire(failpoint.BranchDelay) {
		return w, func() {}
	}
	failpoint.Note(failpoint.BranchDelay, "group="+id)
	t := time.NewTimer(failpoint.Delay())
	<-t.C
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	return rec, func() {
		failpoint.Note(failpoint.BranchDelayDone, "group="+id+" status="+strconv.Itoa(rec.status))
	}
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
