package deploy_test

import (
	"fmt"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
)

// The Kubernetes objects deploy/ uses, with the fields it uses and a few
// more: strict decoding into these refuses a field at the wrong depth.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// intOrString is a port given by number or by name.
type intOrString struct {
	s     string
	i     int
	isInt bool
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	if i, err := strconv.Atoi(n.Value); err == nil && n.Tag == "!!int" {
		v.i, v.isInt = i, true
		return nil
	}
	v.s = n.Value
	return nil
}

func (v intOrString) String() string {
	if v.isInt {
		return strconv.Itoa(v.i)
	}
	return v.s
}

type configMap struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta        `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type workload struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Replicas    *int          `yaml:"replicas"`
		ServiceName string        `yaml:"serviceName"`
		Selector    labelSelector `yaml:"selector"`
		Strategy    *struct {
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxUnavailable intOrString `yaml:"maxUnavailable"`
				MaxSurge       intOrString `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes      []string `yaml:"accessModes"`
				StorageClassName *string  `yaml:"storageClassName"`
				Resources        struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int   `yaml:"terminationGracePeriodSeconds"`
	AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
	ServiceAccountName            string `yaml:"serviceAccountName"`
	SecurityContext               *struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsGroup     *int64 `yaml:"runAsGroup"`
		FSGroup        *int64 `yaml:"fsGroup"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []volume    `yaml:"volumes"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			ResourceFieldRef *struct {
				Resource      string `yaml:"resource"`
				ContainerName string `yaml:"containerName"`
				Divisor       string `yaml:"divisor"`
			} `yaml:"resourceFieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Lifecycle      *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		Capabilities             *struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
	SuccessThreshold    int `yaml:"successThreshold"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name        string `yaml:"name"`
		DefaultMode *int   `yaml:"defaultMode"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName  string `yaml:"secretName"`
		DefaultMode *int   `yaml:"defaultMode"`
		Optional    *bool  `yaml:"optional"`
	} `yaml:"secret"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
	PersistentVolumeClaim *struct {
		ClaimName string `yaml:"claimName"`
	} `yaml:"persistentVolumeClaim"`
}

type service struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Type                  string            `yaml:"type"`
		ClusterIP             string            `yaml:"clusterIP"`
		ExternalTrafficPolicy string            `yaml:"externalTrafficPolicy"`
		Selector              map[string]string `yaml:"selector"`
		Ports                 []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
			NodePort   int         `yaml:"nodePort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type podDisruptionBudget struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		MinAvailable   *intOrString  `yaml:"minAvailable"`
		MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type networkPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			Ports []struct {
				Port     intOrString `yaml:"port"`
				Protocol string      `yaml:"protocol"`
			} `yaml:"ports"`
			From []struct {
				PodSelector       *labelSelector `yaml:"podSelector"`
				NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
			} `yaml:"from"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

type kustomization struct {
	typeMeta  `yaml:",inline"`
	Resources []string `yaml:"resources"`
	Namespace string   `yaml:"namespace"`
}

// k8sSet is what one kustomization directory applies.
type k8sSet struct {
	dir        string
	workloads  []*k8sWorkload
	configMaps map[string]*configMap
	services   []*service
	pdbs       []*podDisruptionBudget
	policies   []*networkPolicy
}

type k8sWorkload struct {
	file string
	w    *workload
}

// wasmgateContainer is a container running the wasmgate image.
type wasmgateContainer struct {
	set  *k8sSet
	wl   *k8sWorkload
	c    *container
	line commandLine
}

func (s *k8sSet) wasmgateContainers() []wasmgateContainer {
	var out []wasmgateContainer
	for _, wl := range s.workloads {
		spec := &wl.w.Spec.Template.Spec
		for i := range spec.Containers {
			c := &spec.Containers[i]
			if !isWasmgateImage(c.Image) {
				continue
			}
			args := append(append([]string{}, c.Command...), c.Args...)
			if len(c.Command) > 0 {
				args = args[1:] // the command names the binary itself
			}
			out = append(out, wasmgateContainer{set: s, wl: wl, c: c, line: commandLine{
				where: fmt.Sprintf("%s (%s/%s, container %s)", wl.file, wl.w.Kind, wl.w.Metadata.Name, c.Name),
				args:  expandK8sVars(args),
			}})
		}
	}
	return out
}

func isWasmgateImage(image string) bool {
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return strings.HasPrefix(name, "wasmgate:") || name == "wasmgate"
}

// expandK8sVars stands in values for the $(VAR) references the kubelet
// expands from the container's environment.
func expandK8sVars(args []string) []string {
	out := make([]string, len(args))
	r := strings.NewReplacer("$(POD_NAME)", "wasmgate-proxy-0", "$(POD_IP)", "10.0.0.7")
	for i, a := range args {
		out[i] = r.Replace(a)
	}
	return out
}

var (
	setsOnce sync.Once
	setsList []*k8sSet
	setsErrs []string
)

// k8sSets reads every kustomization under kubernetes/ with the resources
// it names, recursively.
func k8sSets(t *testing.T) []*k8sSet {
	t.Helper()
	fl := deployFiles(t)
	setsOnce.Do(func() {
		byPath := map[string][]byte{}
		for _, f := range fl {
			byPath[f.rel] = f.data
		}
		for _, f := range fl {
			if strings.HasPrefix(f.rel, "kubernetes/") && path.Base(f.rel) == "kustomization.yaml" {
				s := &k8sSet{dir: path.Dir(f.rel), configMaps: map[string]*configMap{}}
				loadKustomization(s, path.Dir(f.rel), byPath, &setsErrs, map[string]bool{})
				setsList = append(setsList, s)
			}
		}
	})
	for _, e := range setsErrs {
		t.Error(e)
	}
	if len(setsList) < 4 {
		t.Fatalf("found %d kustomizations under deploy/kubernetes, want edge, controlplane, fleet and sidecar", len(setsList))
	}
	return setsList
}

func loadKustomization(s *k8sSet, dir string, files map[string][]byte, errs *[]string, seen map[string]bool) {
	kf := path.Join(dir, "kustomization.yaml")
	if seen[kf] {
		return
	}
	seen[kf] = true
	fail := func(format string, args ...any) { *errs = append(*errs, fmt.Sprintf(format, args...)) }
	data, ok := files[kf]
	if !ok {
		fail("%s: no kustomization.yaml", dir)
		return
	}
	docs, err := yamlDocs(data)
	if err != nil || len(docs) != 1 {
		fail("%s: %v", kf, err)
		return
	}
	var k kustomization
	if err := strict(docs[0], &k); err != nil {
		fail("%s: %v", kf, err)
		return
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		fail("%s: kind %q apiVersion %q", kf, k.Kind, k.APIVersion)
	}
	for _, r := range k.Resources {
		p := path.Clean(path.Join(dir, r))
		if _, ok := files[path.Join(p, "kustomization.yaml")]; ok {
			loadKustomization(s, p, files, errs, seen)
			continue
		}
		data, ok := files[p]
		if !ok {
			fail("%s: resource %s does not exist", kf, r)
			continue
		}
		docs, err := yamlDocs(data)
		if err != nil {
			fail("%s: %v", p, err)
			continue
		}
		for i, d := range docs {
			var tm typeMeta
			if err := d.Decode(&tm); err != nil {
				fail("%s: document %d: %v", p, i+1, err)
				continue
			}
			var target any
			var cm *configMap
			switch tm.Kind {
			case "ConfigMap":
				cm = &configMap{}
				target = cm
			case "Deployment", "StatefulSet":
				w := &workload{}
				target = w
				s.workloads = append(s.workloads, &k8sWorkload{file: p, w: w})
			case "Service":
				sv := &service{}
				target = sv
				s.services = append(s.services, sv)
			case "PodDisruptionBudget":
				pdb := &podDisruptionBudget{}
				target = pdb
				s.pdbs = append(s.pdbs, pdb)
			case "NetworkPolicy":
				np := &networkPolicy{}
				target = np
				s.policies = append(s.policies, np)
			default:
				fail("%s: document %d: kind %q is not one the tests know; add it to k8s_test.go", p, i+1, tm.Kind)
				continue
			}
			if err := strict(d, target); err != nil {
				fail("%s: %s document %d: %v", p, tm.Kind, i+1, err)
			}
			if cm != nil {
				s.configMaps[cm.Metadata.Name] = cm
			}
		}
	}
}

// TestKubernetesFilesListed fails for a manifest that no kustomization
// applies (a wasmgate configuration applied through ctl is not one).
func TestKubernetesFilesListed(t *testing.T) {
	sets := k8sSets(t)
	listed := map[string]bool{}
	for _, f := range deployFiles(t) {
		if !strings.HasPrefix(f.rel, "kubernetes/") || path.Base(f.rel) != "kustomization.yaml" {
			continue
		}
		docs, _ := yamlDocs(f.data)
		var k kustomization
		if len(docs) == 1 && docs[0].Decode(&k) == nil {
			for _, r := range k.Resources {
				listed[path.Clean(path.Join(path.Dir(f.rel), r))] = true
			}
		}
	}
	for _, f := range deployFiles(t) {
		if !strings.HasPrefix(f.rel, "kubernetes/") || path.Ext(f.rel) != ".yaml" || path.Base(f.rel) == "kustomization.yaml" {
			continue
		}
		docs, _ := yamlDocs(f.data)
		if len(docs) > 0 && isWasmgateConfig(topKeys(docs[0])) {
			continue
		}
		if !listed[f.rel] {
			t.Errorf("%s: no kustomization.yaml lists it", f.rel)
		}
	}
	_ = sets
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// resolvePort finds the container port a Service or probe names.
func resolvePort(c *container, p intOrString) (int, bool) {
	for _, cp := range c.Ports {
		if (p.isInt && cp.ContainerPort == p.i) || (!p.isInt && cp.Name == p.s) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// listening is what a wasmgate container listens on, by port.
type listening struct {
	role      string // run or controlplane
	ports     map[int]string
	admin     int            // the port of /ready and /healthz (run), or of the API (controlplane)
	adminHost string         // the admin address's host
	cfg       *config.Config // the file a `run -c` reads; nil otherwise
}

// listensOn works out, from the command line and the configuration it
// reads, the ports a wasmgate container listens on.
func listensOn(t *testing.T, w wasmgateContainer) listening {
	t.Helper()
	l := listening{role: strings.Fields(w.line.sub() + " ?")[0], ports: map[int]string{}}
	switch l.role {
	case "controlplane":
		api, ok := w.line.flagValue("--listen")
		if !ok {
			api = "127.0.0.1:9900"
		}
		l.admin = portOf(t, w.line.where, api)
		l.adminHost, _, _ = strings.Cut(api, ":")
		l.ports[l.admin] = "api (--listen)"
		if e, ok := w.line.flagValue("--etcd-listen-client"); ok {
			l.ports[portOf(t, w.line.where, e)] = "etcd (--etcd-listen-client)"
		}
	case "run":
		var listeners []config.Listener
		admin := config.DefaultAdminAddress
		if file, ok := w.line.flagValue("-c", "--config"); ok {
			l.cfg = mountedConfig(t, w, file)
			if l.cfg == nil {
				return l
			}
			listeners = l.cfg.Listeners
			admin = l.cfg.Admin.Address
		} else {
			// Following the control plane: the listeners are those of
			// the fleet.yaml beside the manifest.
			fleet := configAt(t, path.Join(path.Dir(w.wl.file), "fleet.yaml"))
			if fleet.cfg != nil {
				listeners = fleet.cfg.Listeners
			}
			if a, ok := w.line.flagValue("--admin"); ok {
				admin = a
			}
		}
		for _, ln := range listeners {
			l.ports[portOf(t, w.line.where, ln.Address)] = "listener " + ln.Name
		}
		l.admin = portOf(t, w.line.where, admin)
		l.adminHost, _, _ = strings.Cut(admin, ":")
		l.ports[l.admin] = "admin"
	default:
		t.Errorf("%s: a container of wasmgate runs %q, neither run nor controlplane", w.line.where, l.role)
	}
	return l
}

// mountedConfig finds the ConfigMap key mounted at file.
func mountedConfig(t *testing.T, w wasmgateContainer, file string) *config.Config {
	t.Helper()
	for _, m := range w.c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		if m.SubPath != "" {
			t.Errorf("%s: %s is mounted with subPath: the proxy would never see the ConfigMap change", w.line.where, file)
		}
		for _, v := range w.wl.w.Spec.Template.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.ConfigMap == nil {
				t.Errorf("%s: %s is on volume %s, not a ConfigMap", w.line.where, file, v.Name)
				return nil
			}
			cm, ok := w.set.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s names ConfigMap %s, which %s does not apply", w.line.where, v.Name, v.ConfigMap.Name, w.set.dir)
				return nil
			}
			if _, ok := cm.Data[rel]; !ok {
				t.Errorf("%s: ConfigMap %s has no key %q for %s", w.line.where, cm.Metadata.Name, rel, file)
				return nil
			}
			for _, c := range wasmgateConfigs(t) {
				if strings.HasSuffix(c.where, "#"+rel) && c.data != nil && string(c.data) == cm.Data[rel] {
					return c.cfg
				}
			}
			t.Errorf("%s: the configuration in ConfigMap %s key %s was not found by the walk", w.line.where, cm.Metadata.Name, rel)
			return nil
		}
		t.Errorf("%s: mount %s names no volume", w.line.where, m.Name)
		return nil
	}
	t.Errorf("%s: nothing is mounted at %s", w.line.where, file)
	return nil
}

// writablePaths are the directories a wasmgate command line writes to.
func writablePaths(c commandLine, role string) []string {
	var out []string
	switch role {
	case "run":
		if v, ok := c.flagValue("--wasm-cache-dir"); ok {
			out = append(out, v)
		} else {
			out = append(out, "/home/nonroot/.cache/wasmgate/wasm") // the default under the image's $HOME
		}
		if _, ok := c.flagValue("--etcd-endpoints"); ok {
			if v, ok := c.flagValue("--cache-file"); ok {
				out = append(out, path.Dir(v))
			} else {
				out = append(out, "/var/lib/wasmgate/.wasmgate") // relative to the image's working directory
			}
		}
	case "controlplane":
		if v, ok := c.flagValue("--data-dir"); ok {
			out = append(out, v)
		} else {
			out = append(out, "/var/lib/wasmgate/wasmgate-data")
		}
	}
	return out
}

func TestKubernetes(t *testing.T) {
	for _, s := range k8sSets(t) {
		t.Run(s.dir, func(t *testing.T) {
			// Workload selectors select their own pods.
			for _, wl := range s.workloads {
				if !matches(wl.w.Spec.Selector.MatchLabels, wl.w.Spec.Template.Metadata.Labels) {
					t.Errorf("%s: %s's selector does not match its template's labels", wl.file, wl.w.Metadata.Name)
				}
			}
			// Services reach a port that a container declares.
			for _, sv := range s.services {
				n := 0
				for _, wl := range s.workloads {
					if !matches(sv.Spec.Selector, wl.w.Spec.Template.Metadata.Labels) {
						continue
					}
					n++
					for _, p := range sv.Spec.Ports {
						found := false
						for i := range wl.w.Spec.Template.Spec.Containers {
							if _, ok := resolvePort(&wl.w.Spec.Template.Spec.Containers[i], p.TargetPort); ok {
								found = true
							}
						}
						if !found {
							t.Errorf("Service %s port %s: targetPort %s is no container port of %s", sv.Metadata.Name, p.Name, p.TargetPort, wl.w.Metadata.Name)
						}
					}
				}
				if n == 0 {
					t.Errorf("Service %s selects no workload of %s", sv.Metadata.Name, s.dir)
				}
			}
			for _, pdb := range s.pdbs {
				if !anyWorkload(s, pdb.Spec.Selector.MatchLabels) {
					t.Errorf("PodDisruptionBudget %s selects no workload", pdb.Metadata.Name)
				}
			}
			for _, np := range s.policies {
				if !anyWorkload(s, np.Spec.PodSelector.MatchLabels) {
					t.Errorf("NetworkPolicy %s selects no workload", np.Metadata.Name)
				}
			}
			ws := s.wasmgateContainers()
			if len(ws) == 0 {
				t.Fatalf("%s runs no wasmgate container", s.dir)
			}
			for _, w := range ws {
				checkWasmgateContainer(t, w)
			}
		})
	}
}

func anyWorkload(s *k8sSet, sel map[string]string) bool {
	for _, wl := range s.workloads {
		if matches(sel, wl.w.Spec.Template.Metadata.Labels) {
			return true
		}
	}
	return false
}

func checkWasmgateContainer(t *testing.T, w wasmgateContainer) {
	where := w.line.where
	l := listensOn(t, w)
	c := w.c
	pod := &w.wl.w.Spec.Template.Spec

	// Declared ports and the ports the process listens on are the same.
	declared := map[int]bool{}
	for _, p := range c.Ports {
		declared[p.ContainerPort] = true
		if _, ok := l.ports[p.ContainerPort]; !ok {
			t.Errorf("%s: containerPort %d (%s) is nothing wasmgate listens on (%v)", where, p.ContainerPort, p.Name, l.ports)
		}
	}
	for port, what := range l.ports {
		if !declared[port] {
			t.Errorf("%s: wasmgate listens on %d (%s), which no containerPort declares", where, port, what)
		}
	}
	// The kubelet probes the pod's IP: the admin address must not be loopback.
	if l.adminHost == "127.0.0.1" || l.adminHost == "localhost" || l.adminHost == "off" {
		t.Errorf("%s: the admin/API address is %q: the kubelet's probes cannot reach it", where, l.adminHost)
	}
	// Probes: on the admin port, on paths the server serves.
	wantPath := map[string]string{"readiness": "/ready", "liveness": "/healthz"}
	if l.role == "controlplane" {
		wantPath = map[string]string{"readiness": "/healthz", "liveness": "/healthz"}
	}
	for kind, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no %s httpGet probe", where, kind)
			continue
		}
		port, ok := resolvePort(c, p.HTTPGet.Port)
		if !ok {
			t.Errorf("%s: %s probe port %s is no container port", where, kind, p.HTTPGet.Port)
		} else if port != l.admin {
			t.Errorf("%s: %s probe on port %d, the admin endpoints are on %d", where, kind, port, l.admin)
		}
		if !served(l.role, p.HTTPGet.Path) {
			t.Errorf("%s: %s probe path %s: the server answers 404", where, kind, p.HTTPGet.Path)
		}
		if p.HTTPGet.Path != wantPath[kind] {
			t.Errorf("%s: %s probe on %s, want %s", where, kind, p.HTTPGet.Path, wantPath[kind])
		}
	}
	// Hardening.
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped", where)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: the pod does not require a non-root user", where)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: want cpu and memory requests and a memory limit", where)
	}
	// With a read-only root, every directory wasmgate writes is a volume.
	for _, p := range writablePaths(w.line, l.role) {
		if !onWritableVolume(w, p) {
			t.Errorf("%s: wasmgate writes %s, which is on no writable volume (the root is read-only)", where, p)
		}
	}
	// $(VAR) in args needs VAR in env.
	for _, a := range c.Args {
		for _, m := range k8sVarRef.FindAllStringSubmatch(a, -1) {
			found := false
			for _, e := range c.Env {
				found = found || e.Name == m[1]
			}
			if !found {
				t.Errorf("%s: args name $(%s), which env does not set", where, m[1])
			}
		}
	}
	if l.role != "run" {
		return
	}
	// Shutdown: preStop, then SIGTERM and the drain, within the grace period.
	pre := 0
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		pre = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if pre == 0 {
		t.Errorf("%s: no preStop sleep: the listeners would close before the pod leaves the Service's endpoints", where)
	}
	grace := 30
	if pod.TerminationGracePeriodSeconds != nil {
		grace = *pod.TerminationGracePeriodSeconds
	}
	drain := drainOf(t, w.line, l.cfg)
	if need := time.Duration(pre)*time.Second + drain + 5*time.Second; time.Duration(grace)*time.Second < need {
		t.Errorf("%s: terminationGracePeriodSeconds %d < preStop %ds + drain %s + 5s", where, grace, pre, drain)
	}
	// A sidecar's upstreams on loopback are ports of the pod's other containers.
	if l.cfg != nil {
		for _, cl := range l.cfg.Clusters {
			for _, ep := range cl.Endpoints {
				host, port, _ := strings.Cut(ep.Address, ":")
				if host != "127.0.0.1" && host != "localhost" {
					continue
				}
				if !otherContainerListens(pod, c, port) {
					t.Errorf("%s: cluster %s endpoint %s: no other container of the pod listens on port %s", where, cl.Name, ep.Address, port)
				}
			}
		}
	}
	// A proxy following the control plane reaches its etcd through a
	// Service of the same set, onto the control plane's etcd port.
	if eps, ok := w.line.flagValue("--etcd-endpoints"); ok {
		checkEtcdEndpoints(t, w, eps)
	}
}

var k8sVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func otherContainerListens(pod *podSpec, self *container, port string) bool {
	for i := range pod.Containers {
		c := &pod.Containers[i]
		if c == self {
			continue
		}
		for _, p := range c.Ports {
			if strconv.Itoa(p.ContainerPort) == port {
				return true
			}
		}
		for _, a := range append(append([]string{}, c.Command...), c.Args...) {
			if strings.HasSuffix(a, ":"+port) {
				return true
			}
		}
	}
	return false
}

func onWritableVolume(w wasmgateContainer, p string) bool {
	for _, m := range w.c.VolumeMounts {
		if m.ReadOnly || (p != m.MountPath && !strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) {
			continue
		}
		for _, v := range w.wl.w.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && (v.EmptyDir != nil || v.PersistentVolumeClaim != nil) {
				return true
			}
		}
		for _, v := range w.wl.w.Spec.VolumeClaimTemplates {
			if v.Metadata.Name == m.Name {
				return true
			}
		}
	}
	return false
}

func checkEtcdEndpoints(t *testing.T, w wasmgateContainer, eps string) {
	for _, ep := range strings.Split(eps, ",") {
		host, port, ok := strings.Cut(strings.TrimPrefix(ep, "http://"), ":")
		if !ok {
			t.Errorf("%s: --etcd-endpoints %q has no port", w.line.where, ep)
			continue
		}
		found := false
		for _, sv := range w.set.services {
			if sv.Metadata.Name != host {
				continue
			}
			for _, sp := range sv.Spec.Ports {
				if strconv.Itoa(sp.Port) != port {
					continue
				}
				for _, other := range w.set.wasmgateContainers() {
					if !matches(sv.Spec.Selector, other.wl.w.Spec.Template.Metadata.Labels) {
						continue
					}
					target, ok := resolvePort(other.c, sp.TargetPort)
					etcd, _ := other.line.flagValue("--etcd-listen-client")
					if ok && other.line.sub() == "controlplane" && etcd != "" && portOf(t, other.line.where, etcd) == target {
						found = true
					}
				}
			}
		}
		if !found {
			t.Errorf("%s: --etcd-endpoints %s reaches no control plane's --etcd-listen-client through a Service of %s", w.line.where, ep, w.set.dir)
		}
	}
}

// TestKustomizeBuild renders every kustomization with kubectl, when it is
// installed; it needs no cluster.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed: kustomizations not rendered (the other tests read them directly)")
	}
	for _, s := range k8sSets(t) {
		out, err := exec.Command(kubectl, "kustomize", s.dir).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl kustomize %s: %v\n%s", s.dir, err, out)
			continue
		}
		docs, err := yamlDocs(out)
		if err != nil || len(docs) == 0 {
			t.Errorf("kubectl kustomize %s: %d documents, %v", s.dir, len(docs), err)
		}
	}
}
