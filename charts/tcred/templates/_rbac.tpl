{{/* RBAC rules shared by the cluster-wide and the namespace-scoped shapes (templates/rbac.yaml). */}}

{{- define "tcred.rules.clusterScoped" }}
# Watch ClusterCredentialSources and report their state.
- apiGroups: ["tcred.dev"]
  resources: ["clustercredentialsources"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tcred.dev"]
  resources: ["clustercredentialsources/status"]
  verbs: ["get", "patch", "update"]
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
# webIdentity sources: a token of the TemporaryCredential's ServiceAccount (TokenRequest).
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
# Events on TemporaryCredentials and sources.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# rolloutRestartTargets: restart workloads after a rotation (a pod template annotation);
# list finds the workloads a target's label selector names.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "patch"]
{{- end }}
