{{/* The labels of every object: the selector label of deploy/, and commonLabels. */}}
{{- define "ksa.labels" -}}
app.kubernetes.io/name: ksa-controller
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The controller's ServiceAccount, as the RBAC subject. */}}
{{- define "ksa.subject" -}}
- kind: ServiceAccount
  name: ksa-controller
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "ksa.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
