// Command kube-controller-manager is the upstream controller manager (garbage
// collection, CronJob, Job, ...), built from the published Go modules.
package main

import (
	"os"

	// CronJob time zones must resolve without a system tzdata.
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
