{{/*
Names. The chart's objects are named after the release, so that two
releases never share a cluster-scoped object (a ClusterRole, a
ClusterRoleBinding, a ValidatingAdmissionPolicy or its binding) nor a
namespaced one in a shared namespace (kube-system's probe RoleBinding):

  ksa.name      the application's name: nameOverride, else the chart's
                name (ksa).
  ksa.fullname  the controller's objects: fullnameOverride, else
                RELEASE-NAME-controller, or RELEASE-controller when the
                release's name holds NAME already (RELEASE alone when it
                ends in -controller); every other object of
                the controller is FULLNAME-SUFFIX. Release `ksa`:
                ksa-controller, the names of deploy/.
  ksa.signerName the external signer's objects: FULLNAME with its
                -controller suffix replaced by -signer (ksa-signer).

Each is cut to 63 characters, the longest Service or label value.
*/}}
{{- define "ksa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "ksa.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "ksa.name" . }}
{{- $base := .Release.Name }}
{{- if not (contains $name .Release.Name) }}
{{- $base = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- if hasSuffix "-controller" $base }}
{{- $base | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-controller" ($base | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ksa.signerName" -}}
{{- printf "%s-signer" (include "ksa.fullname" . | trimSuffix "-controller") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The value of app.kubernetes.io/name: ksa-controller by default, as in deploy/. */}}
{{- define "ksa.appName" -}}
{{- printf "%s-controller" (include "ksa.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the controller's pods: stable across upgrades. */}}
{{- define "ksa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ksa.appName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels of every object: the selector labels, the other standard
labels and commonLabels. Call with (dict "ctx" $ "component" "controller").
*/}}
{{- define "ksa.labels" -}}
{{- $ := .ctx }}
{{- include "ksa.selectorLabels" $ }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: ksa
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with $.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The controller's ServiceAccount, as an RBAC subject. */}}
{{- define "ksa.subject" -}}
- kind: ServiceAccount
  name: {{ include "ksa.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The controller's user name, which the admission policies match. */}}
{{- define "ksa.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "ksa.fullname" . }}
{{- end }}

{{/* REPOSITORY@DIGEST when image.digest is set, else REPOSITORY:TAG (the chart's appVersion by default). */}}
{{- define "ksa.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where the pod mounts what the OIDC endpoint and the directory sink read and write. */}}
{{- define "ksa.oidcTlsDir" -}}/etc/ksa/oidc-tls{{- end }}
{{- define "ksa.oidcCaDir" -}}/etc/ksa/oidc-ca{{- end }}
{{- define "ksa.auditTlsDir" -}}/etc/ksa/audit-tls{{- end }}

{{/*
Refusals of values that the schema cannot express: each names the value
and how to fix it. Included by the Deployment.
*/}}
{{- define "ksa.validate" -}}
{{- $oidc := .Values.oidc }}
{{- if $oidc.enabled }}
{{- if not $oidc.publicUrl }}
{{- fail "oidc.enabled needs oidc.publicUrl: the base URL outside verifiers reach the endpoint at (https://...)" }}
{{- end }}
{{- if and $oidc.tls.secretName $oidc.insecureHttp }}
{{- fail "oidc.tls.secretName and oidc.insecureHttp exclude each other: serve HTTPS with the certificate Secret, or plain HTTP behind a TLS-terminating proxy, not both" }}
{{- end }}
{{- if not (or $oidc.tls.secretName $oidc.insecureHttp) }}
{{- fail "oidc.enabled needs oidc.tls.secretName (a kubernetes.io/tls Secret in the release namespace, e.g. of a cert-manager Certificate) or oidc.insecureHttp=true (behind a TLS-terminating proxy)" }}
{{- end }}
{{- if and $oidc.caBundle.configMapName $oidc.caBundle.secretName }}
{{- fail "oidc.caBundle.configMapName and oidc.caBundle.secretName exclude each other: give the CA bundle in one of them" }}
{{- end }}
{{- end }}
{{- if and .Values.publish.directory.enabled (not .Values.publish.directory.volume) }}
{{- fail "publish.directory.enabled needs publish.directory.volume: the volume the documents are written to, which the static host or sync reads too (e.g. {persistentVolumeClaim: {claimName: oidc-documents}})" }}
{{- end }}
{{- if .Values.publish.directory.volume.hostPath }}
{{- fail "publish.directory.volume: a hostPath volume is refused by the restricted Pod Security level the controller's namespace enforces; use a persistentVolumeClaim, csi or ephemeral volume" }}
{{- end }}
{{- range .Values.extraVolumes }}
{{- if .hostPath }}
{{- fail (printf "extraVolumes %s: a hostPath volume is refused by the restricted Pod Security level the controller's namespace enforces; use a persistentVolumeClaim, csi, ephemeral, configMap, secret or projected volume" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.watchNamespace .Values.rotationNamespaces (not (has .Values.watchNamespace .Values.rotationNamespaces)) }}
{{- fail (printf "watchNamespace %s is not one of rotationNamespaces %v: the controller would watch a namespace where it holds no rotation role" .Values.watchNamespace .Values.rotationNamespaces) }}
{{- end }}
{{- $shard := .Values.shard | default dict }}
{{- if and $shard.namespaceSelector (not $shard.name) }}
{{- fail "shard.namespaceSelector needs shard.name: each shard is leader-elected on a Lease of its own (ksa-controller-leader-NAME); give it a name, e.g. --set shard.name=a" }}
{{- end }}
{{- if and $shard.namespaceSelector .Values.watchNamespace }}
{{- fail "shard.namespaceSelector and watchNamespace exclude each other: a shard serves the namespaces its selector selects; leave watchNamespace empty" }}
{{- end }}
{{- end }}
