// Small static programs for the test node (hack/node.sh): the pod sandbox image, a credentials
// consumer and a TCP forwarder. Standard library only, so they build offline.
module local.invalid/tcred-node-images

go 1.26.0
