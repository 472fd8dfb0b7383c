"""Python generated from kubelet's PodResources v1 api.proto (generate.sh regenerates it)."""
