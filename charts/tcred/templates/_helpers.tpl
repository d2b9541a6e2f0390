{{/* Names, labels and small shared fragments of the tcred chart. */}}

{{- define "tcred.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-tcred, or <release> when it already contains the chart name. */}}
{{- define "tcred.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tcred.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tcred.labels" -}}
helm.sh/chart: {{ include "tcred.chart" . }}
{{ include "tcred.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tcred
{{- end }}

{{/* Labels that select the operator pods (immutable in the Deployment selector). */}}
{{- define "tcred.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tcred.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tcred.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tcred.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tcred.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "tcred.metricsServiceName" -}}
{{- printf "%s-metrics" (include "tcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tcred.leaseName" -}}
{{- default (include "tcred.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The operator's ServiceAccount as an RBAC subject. */}}
{{- define "tcred.subject" -}}
- kind: ServiceAccount
  name: {{ include "tcred.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Fails rendering on value combinations the schema cannot express. */}}
{{- define "tcred.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 requires leaderElection.enabled: replicas without a leader would all mint and write" }}
{{- end }}
{{- range .Values.shards }}
{{- if and (gt (int (.replicaCount | default $.Values.replicaCount)) 1) (not $.Values.leaderElection.enabled) }}
{{- fail (printf "shard %s: more than one replica requires leaderElection.enabled" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.rbac.sourceSecrets (not .Values.watchNamespace) }}
{{- fail "rbac.sourceSecrets only applies with watchNamespace (cluster-wide installs can read every Secret already)" }}
{{- end }}
{{- if ge (int .Values.leaderElection.leaseGraceSeconds) (int .Values.leaderElection.leaseDurationSeconds) }}
{{- fail "leaderElection.leaseGraceSeconds must be less than leaderElection.leaseDurationSeconds" }}
{{- end }}
{{- end }}

{{/* Pod identity: object names. */}}
{{- define "tcred.credentialsServiceName" -}}
{{- printf "%s-credentials" (include "tcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "tcred.webhookServiceName" -}}
{{- printf "%s-webhook" (include "tcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "tcred.webhookConfigurationName" -}}
{{- printf "%s-pod-identity" (include "tcred.fullname" .) }}
{{- end }}
{{- define "tcred.tlsSecretName" -}}
{{- printf "%s-tls" (include "tcred.fullname" .) }}
{{- end }}
{{- define "tcred.caSecretName" -}}
{{- printf "%s-ca" (include "tcred.fullname" .) }}
{{- end }}
{{- define "tcred.agentName" -}}
{{- printf "%s-agent" (include "tcred.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "true" when pod-identity certificates come from cert-manager (value, or auto-detected). */}}
{{- define "tcred.podIdentity.certManager" -}}
{{- $v := .Values.podIdentity.certManager.enabled }}
{{- if eq (toString $v) "auto" }}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" }}true{{ end }}
{{- else if $v }}true{{ end }}
{{- end }}

{{/* DNS names of the serving certificate: the credentials and webhook Services. */}}
{{- define "tcred.podIdentity.dnsNames" -}}
{{- $ns := .Release.Namespace }}
{{- list (printf "%s.%s.svc" (include "tcred.credentialsServiceName" .) $ns) (printf "%s.%s.svc" (include "tcred.webhookServiceName" .) $ns) | join "," }}
{{- end }}

{{/* Controller environment of pod identity: the credentials endpoint (its flags belong to the
endpoint), the webhook and, without cert-manager, the generated certificates. */}}
{{- define "tcred.podIdentity.controllerEnv" -}}
{{- $pi := .Values.podIdentity -}}
- name: TCRED_CREDENTIALS_ENDPOINT_ADDRESS
  value: {{ printf "0.0.0.0:%d" (int $pi.endpoint.port) | quote }}
- name: TCRED_TLS_CERT_FILE
  value: /etc/tcred/tls/tls.crt
- name: TCRED_TLS_KEY_FILE
  value: /etc/tcred/tls/tls.key
- name: TCRED_POD_IDENTITY_AUDIENCE
  value: {{ $pi.audience | quote }}
- name: TCRED_WEBHOOK_ADDRESS
  value: {{ printf "0.0.0.0:%d" (int $pi.webhook.port) | quote }}
- name: TCRED_WEBHOOK_TLS_CERT_FILE
  value: /etc/tcred/tls/tls.crt
- name: TCRED_WEBHOOK_TLS_KEY_FILE
  value: /etc/tcred/tls/tls.key
- name: TCRED_WEBHOOK_TOKEN_AUDIENCE
  value: {{ $pi.audience | quote }}
- name: TCRED_WEBHOOK_AGENT_PORT
  value: {{ $pi.agent.port | quote }}
{{- if not (include "tcred.podIdentity.certManager" .) }}
- name: TCRED_MANAGE_CERTIFICATES
  value: "true"
- name: TCRED_CA_SECRET
  value: {{ include "tcred.caSecretName" . | quote }}
- name: TCRED_TLS_SECRET
  value: {{ include "tcred.tlsSecretName" . | quote }}
- name: TCRED_CERTIFICATE_DNS_NAMES
  value: {{ include "tcred.podIdentity.dnsNames" . | quote }}
- name: TCRED_WEBHOOK_CONFIGURATION
  value: {{ include "tcred.webhookConfigurationName" . | quote }}
{{- end }}
{{- end }}

{{/* Sharding (docs/sharding.md). The operator Deployments as a YAML list: the default shard
first (no name when `shards` is empty, so an unsharded install renders as before; it serves what
no named shard selects and runs what is not sharded), then one per `shards` entry. */}}
{{- define "tcred.shards" -}}
{{- $named := list }}
{{- $custom := false }}
{{- range .Values.shards }}
{{- $named = append $named .name }}
{{- if .selector }}{{ $custom = true }}{{ end }}
{{- end }}
{{- if not .Values.shards }}
- {default: true}
{{- else }}
{{- $default := .Values.defaultShard.selector | default (printf "tcred.dev/shard notin (%s)" (join "," $named)) }}
{{- if and $custom (not .Values.defaultShard.selector) }}
{{- fail "a shard with its own selector needs defaultShard.selector: the default shard must select exactly what no other shard does" }}
{{- end }}
- {{ dict "default" true "name" "default" "selector" $default "replicaCount" .Values.defaultShard.replicaCount "controller" .Values.defaultShard.controller "resources" .Values.defaultShard.resources "extraArgs" .Values.defaultShard.extraArgs | toJson }}
{{- range .Values.shards }}
{{- if eq .name "default" }}
{{- fail "shards: the name `default` is the default shard's (defaultShard)" }}
{{- end }}
- {{ merge (dict "selector" (printf "tcred.dev/shard=%s" .name)) (deepCopy .) | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{/* A shard Deployment's name: `<fullname>` for the default shard, `<fullname>-shard-<name>`. */}}
{{- define "tcred.shardDeploymentName" -}}
{{- if .shard.default }}
{{- include "tcred.fullname" .root }}
{{- else }}
{{- printf "%s-shard-%s" (include "tcred.fullname" .root) .shard.name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The pod label telling a named shard's pods apart (the default shard's pods have none, so the
default Deployment's selector stays what an unsharded install has). */}}
{{- define "tcred.shardPodLabels" -}}
{{- if not .default -}}
tcred.dev/shard: {{ .name | quote }}
{{- end }}
{{- end }}

{{/* The controller environment of a shard: its selector, its name (its Lease) and whether it
runs what is not sharded (only the default shard). Empty for an unsharded install. */}}
{{- define "tcred.shardEnv" -}}
{{- if .name -}}
- name: TCRED_SHARD
  value: {{ .name | quote }}
- name: TCRED_SHARD_SELECTOR
  value: {{ .selector | quote }}
- name: TCRED_SERVE_SOURCES
  value: {{ .default | default false | quote }}
{{- end }}
{{- end }}
