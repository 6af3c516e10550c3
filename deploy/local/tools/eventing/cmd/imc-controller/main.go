// Command imc-controller is Knative Eventing's InMemoryChannel reconciler without the
// InMemoryChannel admission webhooks and their certificate controller. The local Knative
// mode does not install those webhooks: its channels are made by the broker controller,
// never by hand, so there is nothing for them to default or validate.
package main

import (
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"

	inmemorychannel "knative.dev/eventing/pkg/reconciler/inmemorychannel/controller"
)

func main() {
	sharedmain.MainWithContext(signals.NewContext(), "inmemorychannel-controller", inmemorychannel.NewController)
}
