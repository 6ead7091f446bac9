// Command etcd is the upstream etcd server. `go install` of the etcd server
// module refuses to build it (its go.mod replaces sibling modules with local
// paths), so this module requires the published release and calls its main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
