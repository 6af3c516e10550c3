package checkpoint

import (
	"math"
	"time"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// The phases of a restore, each fanned out on its own (bank.Ops.MarkFannedOut): its
// volumes, and alongside them the ConfigMaps, Secrets and ServiceAccounts its pods
// reference (its dependencies); then its pods. The protect of a checkpoint has one
// phase, "".
const (
	PhaseVolumes      = "volumes"
	PhaseDependencies = "dependencies"
	PhasePods         = "pods"
)

// PhaseOf is the restore phase of the resources of type typ.
func PhaseOf(typ string) string {
	switch {
	case typ == graph.PodType:
		return PhasePods
	case graph.IsDependency(typ):
		return PhaseDependencies
	}
	return PhaseVolumes
}

// Tally is what an operation's progress is counted from, as the bank records it: the
// batches of the checkpoint's graph, the batches still pending, the resource types whose
// phase has not been fanned out yet, the keys of the failures, and the operation's times.
// Every part only grows or shrinks one way as the operation goes on (markers are taken,
// failures added), so a tally read later never shows less done.
type Tally struct {
	Batches []graph.Batch
	// Problems are the graph's unresolved volumes: a pod whose problem is among the
	// failures is failed, as the checkpoint's view shows it.
	Problems []graph.Problem
	// Pending are the names of the batches whose result was not accepted yet.
	Pending map[string]bool
	// Unstarted are the resource types whose phase was not fanned out yet.
	Unstarted map[string]bool
	// Failed are the keys of the failures (resources, and problems).
	Failed map[string]bool
	// Started is when the operation was requested; Ended when it ended (zero while it
	// runs); Now is when the tally is taken.
	Started, Ended, Now time.Time
}

// Progress counts the tally. The estimate of the time left extrapolates the rate so far
// of the bytes of the volumes finished (done or failed) and of the resources finished,
// and takes the longer of the two: while volumes of a known size are outstanding and
// none has finished there is nothing to measure the slow part by, and no estimate.
func (t Tally) Progress() events.Progress {
	p := events.Progress{Resources: map[string]events.Count{graph.PodType: {}, graph.VolumeType: {}}}
	problems := map[string][]string{} // pod name -> failure keys of its problems
	for _, pr := range t.Problems {
		problems[pr.Pod] = append(problems[pr.Pod], pr.Key())
	}
	for _, b := range t.Batches {
		for _, r := range b.Resources {
			c := p.Resources[r.Type]
			c.Total++
			state := t.state(b, r, problems[r.Name])
			switch state {
			case done:
				c.Done++
			case failed:
				c.Failed++
			}
			p.Resources[r.Type] = c
			if r.Type != graph.VolumeType {
				continue
			}
			size, ok := r.SizeBytes()
			if !ok {
				p.Bytes.Unsized++
				continue
			}
			p.Bytes.Total += size
			switch state {
			case done:
				p.Bytes.Done += size
			case failed:
				p.Bytes.Failed += size
			}
		}
	}
	end := t.Now
	if !t.Ended.IsZero() {
		end = t.Ended
	}
	elapsed := max(end.Sub(t.Started), 0)
	p.ElapsedSeconds = seconds(elapsed)
	if t.Ended.IsZero() {
		p.RemainingSeconds, p.EstimateBasis = estimate(p, elapsed)
	}
	return p
}

type resourceState int

const (
	waiting resourceState = iota
	done
	failed
)

func (t Tally) state(b graph.Batch, r graph.Resource, problems []string) resourceState {
	if t.Failed[r.Key()] {
		return failed
	}
	for _, k := range problems {
		if t.Failed[k] {
			return failed
		}
	}
	if t.Pending[b.Name] || t.Unstarted[r.Type] {
		return waiting
	}
	return done
}

// estimate is the time left at the rate so far, and what it extrapolates; nil when there
// is nothing to extrapolate from, or nothing left.
func estimate(p events.Progress, elapsed time.Duration) (*float64, string) {
	if elapsed <= 0 {
		return nil, ""
	}
	var best time.Duration
	basis := ""
	consider := func(finished, total float64, by string) {
		if finished <= 0 || finished >= total {
			return
		}
		if left := time.Duration(float64(elapsed) * (total - finished) / finished); basis == "" || left > best {
			best, basis = left, by
		}
	}
	bytesFinished := p.Bytes.Done + p.Bytes.Failed
	if p.Bytes.Total > 0 && bytesFinished == 0 {
		return nil, "" // no volume of a known size finished: the slow part is unmeasured
	}
	consider(float64(bytesFinished), float64(p.Bytes.Total), events.EstimateByBytes)
	total := 0
	for _, c := range p.Resources {
		total += c.Total
	}
	consider(float64(p.Finished()), float64(total), events.EstimateByResources)
	if basis == "" {
		return nil, ""
	}
	s := seconds(best)
	return &s, basis
}

// seconds is a duration in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
