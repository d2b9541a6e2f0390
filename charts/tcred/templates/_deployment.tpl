{{/* One operator Deployment: the default shard's (named `<fullname>`, as an unsharded install's)
or a named shard's (docs/sharding.md). Called with (dict "root" $ "shard" <shard>), a shard
being one of "tcred.shards". */}}
{{- define "tcred.deployment" -}}
{{- $root := .root }}
{{- $shard := .shard }}
{{- $controller := merge (deepCopy ($shard.controller | default dict)) $root.Values.controller }}
{{- $replicas := $shard.replicaCount | default $root.Values.replicaCount }}
{{- with $root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tcred.shardDeploymentName" (dict "root" . "shard" $shard) }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "tcred.labels" . | nindent 4 }}
    {{- with include "tcred.shardPodLabels" $shard }}{{ . | nindent 4 }}{{ end }}
spec:
  replicas: {{ $replicas }}
  # Only the leader works; a rolling update starts the new replica before stopping an old one,
  # and a standby takes over the lease within leaseDurationSeconds.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "tcred.selectorLabels" . | nindent 6 }}
      {{- with include "tcred.shardPodLabels" $shard }}{{ . | nindent 6 }}{{ end }}
  template:
    metadata:
      labels:
        {{- toYaml (merge (include "tcred.labels" . | fromYaml) (include "tcred.shardPodLabels" $shard | fromYaml) .Values.podLabels) | nindent 8 }}
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "tcred.serviceAccountName" . }}
      # The operator talks to the API server with its ServiceAccount token.
      automountServiceAccountToken: true
      enableServiceLinks: false
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      containers:
        - name: tcred
          image: {{ include "tcred.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - controller
            {{- with $controller.allowedEndpointHosts }}
            - {{ printf "--allowed-endpoint-hosts=%s" (join "," .) | quote }}
            {{- end }}
            {{- with $controller.excludeNamespaces }}
            - {{ printf "--exclude-namespaces=%s" (join "," .) | quote }}
            {{- end }}
            {{- with .Values.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $shard.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            {{- with .Values.watchNamespace }}
            - name: TCRED_NAMESPACE
              value: {{ . | quote }}
            {{- end }}
            - name: TCRED_METRICS_BIND_ADDRESS
              value: {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | quote }}
            - name: TCRED_LOG_FORMAT
              value: {{ .Values.logFormat | quote }}
            - name: RUST_LOG
              value: {{ .Values.logLevel | quote }}
            - name: TCRED_CONCURRENCY
              value: {{ $controller.concurrency | quote }}
            - name: TCRED_MINT_RATE
              value: {{ $controller.mintRate | quote }}
            - name: TCRED_MINT_BURST
              value: {{ $controller.mintBurst | quote }}
            - name: TCRED_MINT_RATE_TOTAL
              value: {{ $controller.mintRateTotal | quote }}
            - name: TCRED_MINT_BURST_TOTAL
              value: {{ $controller.mintBurstTotal | quote }}
            - name: TCRED_NAMESPACE_CONCURRENCY
              value: {{ $controller.namespaceConcurrency | quote }}
            - name: TCRED_MIN_MINT_INTERVAL
              value: {{ $controller.minMintInterval | quote }}
            - name: TCRED_MIN_CREDENTIAL_LIFETIME
              value: {{ $controller.minCredentialLifetime | quote }}
            - name: TCRED_SESSION_WARNING
              value: {{ $controller.sessionWarning | quote }}
            - name: TCRED_LEADER_ELECT
              value: {{ .Values.leaderElection.enabled | quote }}
            {{- if .Values.leaderElection.enabled }}
            - name: TCRED_LEADER_ELECTION_ID
              value: {{ include "tcred.leaseName" . | quote }}
            - name: TCRED_LEASE_DURATION_SECONDS
              value: {{ .Values.leaderElection.leaseDurationSeconds | quote }}
            - name: TCRED_LEASE_GRACE_SECONDS
              value: {{ .Values.leaderElection.leaseGraceSeconds | quote }}
            {{- end }}
            {{- if .Values.podIdentity.enabled }}
            {{- include "tcred.podIdentity.controllerEnv" . | nindent 12 }}
            {{- end }}
            {{- with include "tcred.shardEnv" $shard }}{{ . | nindent 12 }}{{ end }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http-metrics
              containerPort: {{ .Values.metrics.port }}
              protocol: TCP
            {{- if .Values.podIdentity.enabled }}
            - name: https-creds
              containerPort: {{ .Values.podIdentity.endpoint.port }}
              protocol: TCP
            - name: https-webhook
              containerPort: {{ .Values.podIdentity.webhook.port }}
              protocol: TCP
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http-metrics
            {{- toYaml .Values.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http-metrics
            {{- toYaml .Values.probes.readiness | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          {{- with (default .Values.resources $shard.resources) }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if .Values.podIdentity.enabled }}
          volumeMounts:
            - name: tls
              mountPath: /etc/tcred/tls
              readOnly: true
          {{- end }}
      {{- if .Values.podIdentity.enabled }}
      volumes:
        # Optional: without cert-manager the leader writes it after start; both TLS servers wait
        # for the files and re-read them when they change.
        - name: tls
          secret:
            secretName: {{ include "tcred.tlsSecretName" . }}
            optional: true
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        {{- if .Values.affinity }}
        {{- toYaml .Values.affinity | nindent 8 }}
        {{- else }}
        # Default: prefer one replica per node, so a node failure leaves a standby.
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "tcred.selectorLabels" . | nindent 20 }}
                    {{- with include "tcred.shardPodLabels" $shard }}{{ . | nindent 20 }}{{ end }}
        {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $c := deepCopy . }}
        {{- if not (hasKey $c "labelSelector") }}
        {{- $_ := set $c "labelSelector" (dict "matchLabels" (merge (include "tcred.selectorLabels" $root | fromYaml) (include "tcred.shardPodLabels" $shard | fromYaml))) }}
        {{- end }}
        - {{ toYaml $c | indent 10 | trim }}
        {{- end }}
      {{- end }}
{{- end }}
{{- end }}
