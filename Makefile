# podguard Makefile. `make help` lists the targets.
#
# Local stack (deploy/local/): a loopback-only Kubernetes control plane with a fake node,
# Keystone, Swift and Cinder. Ports and paths: deploy/local/stack.env. While it is up,
# $(HOME)/.local/state/podguard/stack/env holds everything a test needs (KUBECONFIG, OS_*, ST_*).

SHELL := /bin/bash
STACK := deploy/local/stack.sh

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-20s %s\n", $$1, $$2 }'

## --- local stack ---------------------------------------------------------------------

.PHONY: stack-up stack-down stack-status stack-install stack-build stack-knative-crds
stack-up: ## install, build and start the local stack (no-op when it runs)
	$(STACK) up

stack-down: ## stop the local stack (harmless when stopped)
	$(STACK) down

stack-status: ## processes (pid, up/down, RSS) and endpoints of the local stack
	@$(STACK) status

stack-install: ## install the Debian packages of the local stack
	$(STACK) install

stack-build: ## build etcd, Kubernetes and kwok binaries (cached in ~/.cache/podguard/bin)
	$(STACK) build

stack-knative-crds: ## apply the Knative Serving/Eventing CRDs to the local apiserver
	$(STACK) knative-crds

## --- more targets go here ----------------------------------------------------------------
# test:   unit and integration tests (integration tests read the local stack's env file)
# demo:   run the podguard demo against the local stack
# bench:  benchmarks
