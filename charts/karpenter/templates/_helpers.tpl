{{/* Chart name. */}}
{{- define "karpenter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix. */}}
{{- define "karpenter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "karpenter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "karpenter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the controller's pods. */}}
{{- define "karpenter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "karpenter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "karpenter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "karpenter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The controller image: REPOSITORY@DIGEST when image.digest is set (what was pushed, exactly;
a tag next to it would only be ignored by the runtime), else REPOSITORY:TAG (appVersion). */}}
{{- define "karpenter.image" -}}
{{- with .Values.image.digest }}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" .) }}
{{- fail (printf "image.digest must look like sha256:<64 hex digits>, got %q" .) }}
{{- end }}
{{- printf "%s@%s" $.Values.image.repository . }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Cluster API provider's rules in the management cluster (crates/clusterapi): the same
as examples/clusterapi/rbac.yaml (crates/controller/tests/e2e_chart_clusterapi.rs checks). */}}
{{- define "karpenter.clusterapiRules" -}}
# Catalog: opted-in MachineDeployments (list, watch: the provider's cache), a Machine's origin
# and drift (get); scale mode: spec.replicas and our ledger annotation, in conditioned merge
# patches (patch).
- apiGroups: ["cluster.x-k8s.io"]
  resources: ["machinedeployments"]
  verbs: ["get", "list", "watch", "patch"]
# One Machine per NodeClaim: create, find (list by label, watch for the provider's cache, get
# after a conflict), mark cloned and label by providerID (patch), delete; scale mode: take a
# MachineSet's Machine, mark it for deletion (patch).
- apiGroups: ["cluster.x-k8s.io"]
  resources: ["machines"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Read the MachineDeployment's infrastructure and bootstrap templates, create the per-Machine
# clones (CAPI deletes them with the Machine).
- apiGroups: ["infrastructure.cluster.x-k8s.io", "bootstrap.cluster.x-k8s.io"]
  resources: ["*"]
  verbs: ["get", "create"]
# Events on MachineDeployments that cannot be offered (bad annotations) or are skipped (max
# size, paused).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Whether the chart grants the Cluster API rules here: the provider is clusterapi and the
management cluster is this one (no kubeconfig Secret). */}}
{{- define "karpenter.clusterapiLocal" -}}
{{- if and (eq .Values.controller.cloudProvider "clusterapi") (not .Values.clusterapi.kubeconfigSecret.name) -}}
true
{{- end }}
{{- end }}
