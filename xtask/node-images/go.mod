// The two programs of the test images that run on the real nodes of the
// end-to-end tests (see xtask/src/node.rs): the pod sandbox's pause and the
// token reader. Standard library only; built static (CGO_ENABLED=0).
module ksa.dev/node-images

go 1.26.0
