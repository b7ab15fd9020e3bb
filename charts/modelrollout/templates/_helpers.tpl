{{- define "modelrollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.evaluationImage" -}}
{{- printf "%s:%s" .Values.evaluation.image.repository (default .Chart.AppVersion .Values.evaluation.image.tag) -}}
{{- end -}}

{{- define "modelrollout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The rules the operator needs in each namespace it drives rollouts in: only
the verbs and resources it uses (list and watch: the cache of its children) (tests/cluster/test_helm_chart.py runs a
rollout with exactly these).
*/}}
{{- define "modelrollout.rolloutRules" -}}
- apiGroups: ["modelrollout.dev"]
  resources: ["modelrollouts"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["modelrollout.dev"]
  resources: ["modelrollouts/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- with .Values.rbac.providerReferences }}
{{- if .enabled }}
{{- /* Metric provider credentials and CAs, notification sink URLs and the namespace's default
     notifications (Secret modelrollout-notifications) a rollout uses: get by name, never list. */}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
  {{- with .configMapNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "modelrollout.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}-dashboard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelrollout.dashboardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelrollout.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
app.kubernetes.io/component: dashboard
{{- end -}}

{{- define "modelrollout.dashboardServiceAccountName" -}}
{{- if .Values.dashboard.serviceAccount.create -}}
{{- default (printf "%s-dashboard" (include "modelrollout.fullname" .) | trunc 63 | trimSuffix "-") .Values.dashboard.serviceAccount.name -}}
{{- else -}}
{{- required "dashboard.serviceAccount.name is required when dashboard.serviceAccount.create is false" .Values.dashboard.serviceAccount.name -}}
{{- end -}}
{{- end -}}
