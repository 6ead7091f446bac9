// Command kube-apiserver is the upstream Kubernetes API server, built from the
// published Go modules so the e2e tests need no container images.
package main

import (
	"os"

	// CronJob time zones must resolve without a system tzdata.
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
