{{/* RBAC rules shared by the cluster-wide and the namespace-scoped shapes (templates/rbac.yaml). */}}

{{- define "tcred.rules.clusterScoped" }}
# Watch ClusterCredentialSources and report their state.
- apiGroups: ["tcred.dev"]
  resources: ["clustercredentialsources"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tcred.dev"]
  resources: ["clustercredentialsources/status"]
  verbs: ["get", "patch", "update"]
{{- if .Values.rbac.webIdentity.enabled }}
# webIdentity sources: check each ServiceAccount token with a TokenReview before it leaves (a
# token the API server itself accepts is never sent), and read the cluster's issuer.
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
- nonResourceURLs: ["/.well-known/openid-configuration"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{- define "tcred.rules.namespaced" }}
# Watch TemporaryCredentials and CredentialSources and report their state.
- apiGroups: ["tcred.dev"]
  resources: ["temporarycredentials", "credentialsources"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tcred.dev"]
  resources: ["temporarycredentials/status", "credentialsources/status"]
  verbs: ["get", "patch", "update"]
# Managed Secrets (server-side apply; watched by label only; the old one deleted after a rename),
# access key Secrets (read) and Identity Center session Secrets (refreshed tokens written back).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
{{- if .Values.rbac.webIdentity.enabled }}
# webIdentity sources: a token of the TemporaryCredential's ServiceAccount (TokenRequest), after
# reading the ServiceAccount's opt-in annotation tcred.dev/allowed-credentials.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- end }}
# Events on TemporaryCredentials and sources.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.rolloutRestarts.enabled }}
# rolloutRestartTargets: restart workloads that opted in (tcred.dev/restart-on-rotation) after a
# rotation (a pod template annotation); list finds the workloads a target's label selector names.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "patch"]
{{- end }}
{{- if .Values.rbac.rolloutRestarts.argoRollouts }}
# rolloutRestartTargets of kind Rollout (Argo Rollouts): set spec.restartAt on Rollouts that opted
# in, as `kubectl argo rollouts restart` does.
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "patch"]
{{- end }}
{{- end }}
