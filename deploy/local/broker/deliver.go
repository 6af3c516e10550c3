package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/zap"

	"github.com/podguard/podguard/events"
)

// outcome is the result of one delivery attempt.
type outcome struct {
	ok bool
	// status is the HTTP status, or 500 when there was no response (as Knative reports
	// dispatch errors in knativeerrorcode).
	status int
	// body is the start of a failed response, or the dispatch error.
	body  []byte
	retry bool
	reply *event.Event
}

// maxErrorBody bounds what is kept of a failed response.
const maxErrorBody = 4096

// attempt makes one delivery attempt of j and decides what follows: done, retry after
// the backoff, or dead letter.
func (b *Broker) attempt(j *job) {
	out := b.post(j)
	j.attempts++
	j.last = out
	log := b.log.With(append(eventFields(j.event), zap.String("trigger", j.route.trigger.Name), zap.String("target", j.target),
		zap.Int("attempt", j.attempts))...)
	delivery := j.route.trigger.Delivery
	switch {
	case out.ok && j.toSink:
		log.Infow("dead letter delivered to the sink")
		b.done()
	case out.ok:
		b.delivered.Add(1)
		log.Debugw("delivered", zap.Int("status", out.status))
		if out.reply != nil && !b.ingestReply(j, *out.reply, log) {
			return // j was dead-lettered
		}
		b.done()
	case b.ctx.Err() != nil:
		b.abandon(j)
	case out.retry && j.attempts <= delivery.Retry:
		wait := delivery.Backoff(j.attempts - 1)
		b.retried.Add(1)
		log.Warnw("delivery failed, retrying", zap.Int("status", out.status), zap.Duration("backoff", wait),
			zap.Int("retries-left", delivery.Retry-j.attempts+1))
		b.routines.Add(1)
		go func() {
			defer b.routines.Done()
			if err := b.sleep(b.ctx, wait); err != nil {
				b.abandon(j)
				return
			}
			b.requeue(j)
		}()
	case j.toSink:
		log.Errorw("dead-letter sink failed: the dead letter is kept by the recorder only", zap.Int("status", out.status))
		b.done()
	default:
		log.Errorw("delivery failed for good, dead-lettered", zap.Int("status", out.status), zap.Bool("retryable", out.retry))
		b.deadLetter(j, out)
	}
}

// ingestReply feeds a subscriber's reply back into the broker, as Knative's broker sends
// replies to its own ingress; with Options.Identity, as sent by the Trigger's OIDC
// identity, which the policies must admit. A reply that cannot be accepted dead-letters
// the event that caused it (and finishes j): ingestReply then reports false.
func (b *Broker) ingestReply(j *job, reply event.Event, log *zap.SugaredLogger) bool {
	if b.guard != nil {
		// Knative's broker posts replies to its ingress with the Trigger's token; here the
		// broker knows the sender, and only the policies remain to be asked.
		subject := b.guard.triggerSubject(j.route.trigger.Name)
		if err := b.guard.authorize(subject, reply); err != nil {
			log.Warnw("reply refused for its sender, dead-lettering the event it answers", zap.String("reply-type", reply.Type()),
				zap.String("subject", subject), zap.Error(err))
			status := http.StatusForbidden
			var refused *RefusedError
			if errors.As(err, &refused) {
				status = refused.Status
			}
			b.deadLetter(j, outcome{status: status, body: []byte("reply refused by the broker: " + err.Error())})
			return false
		}
	}
	reply.SetExtension(ExtTTL, j.ttl-1)
	if err := b.ingest(reply, fromReply); err != nil {
		log.Warnw("reply refused, dead-lettering the event it answers", zap.String("reply-type", reply.Type()), zap.Error(err))
		b.deadLetter(j, outcome{status: http.StatusBadRequest, body: []byte("reply refused by the broker: " + err.Error())})
		return false
	}
	return true
}

// post delivers j's event in binary mode and classifies the answer.
func (b *Broker) post(j *job) outcome {
	ctx := b.ctx
	if t := j.route.trigger.Delivery.Timeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.target, nil)
	if err != nil {
		return dispatchError(err)
	}
	if err := cehttp.WriteRequest(binding.WithForceBinary(ctx), binding.ToMessage(&j.event), req); err != nil {
		return dispatchError(err)
	}
	req.Header.Set("Prefer", "reply")
	if b.guard != nil {
		if aud := j.route.audience(j.toSink); aud != "" {
			sa := events.TriggerServiceAccount(j.route.trigger.Name)
			token, err := b.guard.tokens.Token(ctx, sa, aud)
			if err != nil {
				b.log.Warnw("no token for the delivery", append(eventFields(j.event), zap.String("trigger", j.route.trigger.Name),
					zap.String("service-account", sa), zap.String("audience", aud), zap.Error(err))...)
				return dispatchError(fmt.Errorf("get a token of service account %s for audience %q: %w", sa, aud, err))
			}
			req.Header.Set("Authorization", "Bearer "+token)
		}
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return dispatchError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return outcome{status: resp.StatusCode, body: body, retry: retryable(resp.StatusCode)}
	}
	if j.toSink {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxEventBytes))
		return outcome{ok: true, status: resp.StatusCode}
	}
	return readReply(ctx, resp)
}

// readReply takes the event a subscriber may answer with. A non-empty answer that is
// not a valid CloudEvent is a failure (502, retried), as in Knative's broker filter.
func readReply(ctx context.Context, resp *http.Response) outcome {
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxEventBytes+1))
	if err != nil {
		return dispatchError(fmt.Errorf("read reply: %w", err))
	}
	if len(body) > MaxEventBytes {
		return badGateway(fmt.Sprintf("reply larger than %d bytes", MaxEventBytes))
	}
	msg := cehttp.NewMessage(resp.Header, io.NopCloser(bytes.NewReader(body)))
	defer func() { _ = msg.Finish(nil) }()
	if msg.ReadEncoding() == binding.EncodingUnknown {
		if len(body) > 0 {
			return badGateway("the response is neither empty nor a CloudEvent")
		}
		return outcome{ok: true, status: resp.StatusCode}
	}
	reply, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return badGateway("malformed reply event: " + err.Error())
	}
	if err := reply.Validate(); err != nil {
		return badGateway("invalid reply event: " + err.Error())
	}
	return outcome{ok: true, status: resp.StatusCode, reply: reply}
}

func dispatchError(err error) outcome {
	return outcome{status: http.StatusInternalServerError, body: []byte("dispatch error: " + err.Error()), retry: true}
}

func badGateway(reason string) outcome {
	return outcome{status: http.StatusBadGateway, body: []byte(reason), retry: true}
}

// retryable reports whether Knative retries a delivery answered with status: 5xx, 404
// (a subscriber still starting), 408, 409 and 429. Other statuses, 400 above all, are
// final.
func retryable(status int) bool {
	switch {
	case status >= 500:
		return true
	case status == http.StatusNotFound, status == http.StatusRequestTimeout,
		status == http.StatusConflict, status == http.StatusTooManyRequests:
		return true
	default:
		return false
	}
}

// errorData is the knativeerrordata of a response body: its base64 text, cut to
// MaxErrorData characters.
func errorData(body []byte) string {
	s := base64.StdEncoding.EncodeToString(body)
	if len(s) > MaxErrorData {
		s = s[:MaxErrorData]
	}
	return s
}

// deadLetter records j's event with the error extensions and sends it to the Trigger's
// dead-letter sink, with the Trigger's retries.
func (b *Broker) deadLetter(j *job, out outcome) {
	b.deadLettered.Add(1)
	e := j.event.Clone()
	e.SetExtension(ExtErrorDest, j.target)
	e.SetExtension(ExtErrorCode, out.status)
	e.SetExtension(ExtErrorData, errorData(out.body))
	response := out.body
	if len(response) > MaxErrorData {
		response = response[:MaxErrorData]
	}
	letter := DeadLetter{
		Time:        b.now().UTC(),
		Trigger:     j.route.trigger.Name,
		Destination: j.target,
		Code:        out.status,
		Attempts:    j.attempts,
		Response:    string(response),
		Event:       e,
	}
	if err := b.recorder.Record(letter); err != nil {
		b.log.Errorw("recording a dead letter failed", append(eventFields(e), zap.Error(err))...)
	}
	if j.route.deadLetter != "" {
		// Queued before j is done, so that Close waits for it.
		_ = b.enqueue([]*job{{route: j.route, target: j.route.deadLetter, toSink: true, event: e, ttl: j.ttl}}, fromReply)
	}
	b.done()
}

// abandon gives up a job the broker has no time left for (it is stopping): a delivery
// becomes a dead letter in the recorder only, a dead letter already recorded is dropped.
func (b *Broker) abandon(j *job) {
	if j.toSink {
		b.log.Errorw("broker stopped before the dead-letter sink answered: the dead letter is kept by the recorder only",
			append(eventFields(j.event), zap.String("trigger", j.route.trigger.Name))...)
		b.done()
		return
	}
	out := j.last
	if out.status == 0 || out.ok {
		out = dispatchError(errors.New("broker stopped before the delivery ended"))
	}
	b.log.Errorw("broker stopped before the delivery ended, dead-lettered to the recorder",
		append(eventFields(j.event), zap.String("trigger", j.route.trigger.Name))...)
	j.route = &route{trigger: j.route.trigger, target: j.route.target} // the sink is out of reach too
	b.deadLetter(j, out)
}
