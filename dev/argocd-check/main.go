// Command argocd-check runs Argo CD's own code on a ModelRollout: the health
// check through Argo CD's Lua runtime, the target object as Argo CD applies it,
// and the diff Argo CD's application controller computes between git and the
// live object.
//
// Every setting comes from an argocd-cm ConfigMap read through Argo CD's
// settings manager, as the controller reads it; argocd-cm holds only the health
// customization docs/argocd.md registers, so every other setting is Argo CD's
// default (annotation tracking, status ignored in diffs, no ignoreDifferences).
//
//	argocd-check health --health-lua health.lua --object live.json
//	argocd-check target --health-lua health.lua --app chat --namespace ml --manifest chat.yaml
//	argocd-check diff   --health-lua health.lua --app chat --namespace ml --manifest chat.yaml \
//	                    --live live.json --kubeconfig kubeconfig
//
// Each prints one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/diff"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/argo"
	argodiff "github.com/argoproj/argo-cd/v3/util/argo/diff"
	"github.com/argoproj/argo-cd/v3/util/argo/normalizers"
	kubeutil "github.com/argoproj/argo-cd/v3/util/kube"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

// The argocd-cm key docs/argocd.md tells users to set.
const healthKey = "resource.customizations.health.modelrollout.dev_ModelRollout"

// The namespace Argo CD runs in; the settings manager only looks there.
const argocdNamespace = "argocd"

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: argocd-check health|target|diff [flags]"))
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	healthLua := flags.String("health-lua", "", "the health check registered in argocd-cm")
	objectPath := flags.String("object", "", "health: the live object (JSON)")
	app := flags.String("app", "", "target, diff: the Application's name")
	namespace := flags.String("namespace", "", "target, diff: the Application's destination namespace")
	manifestPath := flags.String("manifest", "", "target, diff: the manifest in git (YAML)")
	livePath := flags.String("live", "", "diff: the live object (JSON)")
	kubeconfig := flags.String("kubeconfig", "", "diff: the cluster the server-side diff dry-runs on")
	if err := flags.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	script, err := os.ReadFile(*healthLua)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	mgr := settingsManager(ctx, string(script))

	var result any
	switch os.Args[1] {
	case "health":
		result, err = resourceHealth(mgr, read(*objectPath))
	case "target":
		result, err = target(mgr, read(*manifestPath), *app, *namespace)
	case "diff":
		result, err = stateDiff(ctx, mgr, read(*manifestPath), read(*livePath), *app, *namespace, *kubeconfig)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "argocd-check:", err)
	os.Exit(1)
}

func read(path string) *unstructured.Unstructured {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{}
	// sigs.k8s.io/yaml reads JSON as well: YAML is a superset.
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		fail(fmt.Errorf("%s: %w", path, err))
	}
	return obj
}

// settingsManager is Argo CD's settings manager over an argocd-cm holding the health check.
func settingsManager(ctx context.Context, healthLua string) *settings.SettingsManager {
	labels := map[string]string{"app.kubernetes.io/part-of": "argocd"}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: common.ArgoCDConfigMapName, Namespace: argocdNamespace, Labels: labels},
		Data:       map[string]string{healthKey: healthLua},
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: common.ArgoCDSecretName, Namespace: argocdNamespace, Labels: labels},
		Data:       map[string][]byte{},
	}
	return settings.NewSettingsManager(ctx, fake.NewClientset(cm, secret), argocdNamespace)
}

type healthResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// resourceHealth is what controller/health.go computes for one live resource.
func resourceHealth(mgr *settings.SettingsManager, live *unstructured.Unstructured) (*healthResult, error) {
	overrides, err := mgr.GetResourceOverrides()
	if err != nil {
		return nil, err
	}
	status, err := health.GetResourceHealth(live, lua.ResourceHealthOverrides(overrides))
	if err != nil {
		return nil, err
	}
	if status == nil {
		return nil, fmt.Errorf("no health check applies to %s", live.GroupVersionKind())
	}
	return &healthResult{Status: string(status.Status), Message: status.Message}, nil
}

// target is the manifest as Argo CD applies it: the repo-server sets the tracking
// annotation, the controller the destination namespace (controller/state.go).
func target(mgr *settings.SettingsManager, manifest *unstructured.Unstructured, app, namespace string) (*unstructured.Unstructured, error) {
	appLabelKey, err := mgr.GetAppInstanceLabelKey()
	if err != nil {
		return nil, err
	}
	trackingMethod, err := mgr.GetTrackingMethod()
	if err != nil {
		return nil, err
	}
	installationID, err := mgr.GetInstallationID()
	if err != nil {
		return nil, err
	}
	tracking := argo.NewResourceTracking()
	obj := manifest.DeepCopy()
	if obj.GetNamespace() == "" {
		obj.SetNamespace(namespace)
	}
	method := v1alpha1.TrackingMethod(trackingMethod)
	if err := tracking.SetAppInstance(obj, appLabelKey, app, namespace, method, installationID); err != nil {
		return nil, err
	}
	return obj, nil
}

type diffResult struct {
	Modified       bool            `json:"modified"`
	NormalizedLive json.RawMessage `json:"normalizedLive"`
	PredictedLive  json.RawMessage `json:"predictedLive"`
}

// stateDiff is the comparison in controller/state.go CompareAppState for an
// Application with `syncOptions: [ServerSideApply=true]`: that option turns on
// server-side diff (shouldUseServerSideDiff), a dry-run server-side apply as
// argocd-controller whose result is compared with the live object.
func stateDiff(ctx context.Context, mgr *settings.SettingsManager, manifest, live *unstructured.Unstructured, app, namespace, kubeconfig string) (*diffResult, error) {
	desired, err := target(mgr, manifest, app, namespace)
	if err != nil {
		return nil, err
	}
	overrides, err := mgr.GetResourceOverrides()
	if err != nil {
		return nil, err
	}
	compareOptions, err := mgr.GetResourceCompareOptions()
	if err != nil {
		return nil, err
	}
	appLabelKey, err := mgr.GetAppInstanceLabelKey()
	if err != nil {
		return nil, err
	}
	trackingMethod, err := mgr.GetTrackingMethod()
	if err != nil {
		return nil, err
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	// The controller's GVK parser comes from its cluster cache, built from the
	// cluster's OpenAPI document in the same way.
	_, gvkParser, err := kubeutil.NewKubectl().LoadOpenAPISchema(config)
	if err != nil {
		return nil, err
	}
	applier, cleanup, err := kubeutil.ManageServerSideDiffDryRuns(config, nil)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	// No Application-level ignoreDifferences: that is what this command proves unneeded.
	diffConfig, err := argodiff.NewDiffConfigBuilder().
		WithDiffSettings(nil, overrides, compareOptions.IgnoreAggregatedRoles, normalizers.IgnoreNormalizerOpts{}).
		WithTracking(appLabelKey, trackingMethod).
		WithNoCache().
		WithGVKParser(gvkParser).
		WithManager(common.ArgoCDSSAManager).
		WithServerSideDiff(true).
		WithServerSideDryRunner(diff.NewK8sServerSideDryRunner(applier)).
		Build()
	if err != nil {
		return nil, err
	}
	results, err := argodiff.StateDiffs(ctx, []*unstructured.Unstructured{live}, []*unstructured.Unstructured{desired}, diffConfig)
	if err != nil {
		return nil, err
	}
	only := results.Diffs[0]
	return &diffResult{Modified: only.Modified, NormalizedLive: only.NormalizedLive, PredictedLive: only.PredictedLive}, nil
}
