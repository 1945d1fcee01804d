{{/* Names are fixed (not release-prefixed): the code and Kaito's tooling look for them. */}}
{{- define "kaito.labels" -}}
app.kubernetes.io/part-of: kaito-py
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "kaito.operatorImage" -}}
{{ .Values.images.operator.repository }}:{{ .Values.images.operator.tag }}
{{- end }}

{{- define "kaito.serveImage" -}}
{{ .Values.images.serve.repository }}:{{ .Values.images.serve.tag }}
{{- end }}

{{- define "kaito.webhookService" -}}kaito-webhook{{- end }}
{{- define "kaito.webhookSecret" -}}kaito-webhook-cert{{- end }}
{{- define "kaito.webhookConfiguration" -}}kaito-workspace-validation{{- end }}

{{/* The pod securityContext every operator pod runs with: non-root, no privilege escalation. */}}
{{- define "kaito.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "kaito.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "kaito.metricsAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
"true" when the chart runs the gpu-provisioner: it is enabled and the controller provisions nodes
(nodeProvisioner byo creates no node objects, so nothing would serve them: no Deployment, no
ServiceAccount, no RBAC). Also checks nodeProvisioner and nodeAPI against the controller's choices.
*/}}
{{- define "kaito.provisionerEnabled" -}}
{{- $mode := .Values.nodeProvisioner | default "gpu-provisioner" -}}
{{- if not (has $mode (list "gpu-provisioner" "byo")) -}}
{{- fail (printf "nodeProvisioner must be gpu-provisioner or byo, not %q" $mode) -}}
{{- end -}}
{{- if not (has .Values.nodeAPI (list "auto" "nodeclaim" "machine")) -}}
{{- fail (printf "nodeAPI must be auto, nodeclaim or machine, not %q" .Values.nodeAPI) -}}
{{- end -}}
{{- if and .Values.provisioner.enabled (ne $mode "byo") }}true{{ end -}}
{{- end }}
