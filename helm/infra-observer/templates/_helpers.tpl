{{/* Names, labels and checks shared by the templates. */}}

{{- define "infra-observer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infra-observer.fullname" -}}
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

{{- define "infra-observer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infra-observer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infra-observer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "infra-observer.labels" -}}
{{ include "infra-observer.selectorLabels" . }}
{{ include "infra-observer.sharedLabels" (dict "context" . "component" "observer") }}
{{- end }}

{{/*
The labels beside the selector's: commonLabels, then `extra` (podLabels), may replace the
chart's own; the selector's keys are refused in "infra-observer.validate".
*/}}
{{- define "infra-observer.sharedLabels" -}}
{{- $ctx := .context }}
{{- $labels := dict "helm.sh/chart" (include "infra-observer.chart" $ctx) "app.kubernetes.io/version" $ctx.Chart.AppVersion "app.kubernetes.io/component" .component "app.kubernetes.io/part-of" "infra-observer" "app.kubernetes.io/managed-by" $ctx.Release.Service }}
{{- toYaml (merge (deepCopy (.extra | default dict)) (deepCopy $ctx.Values.commonLabels) $labels) }}
{{- end }}

{{/*
The `helm test` Pod's labels: another name, so that neither the Service nor the workload's
selector (which a ReplicaSet adopts pods by) ever matches it.
*/}}
{{- define "infra-observer.testName" -}}
{{- printf "%s-test" (include "infra-observer.name" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{- define "infra-observer.testLabels" -}}
app.kubernetes.io/name: {{ include "infra-observer.testName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "infra-observer.sharedLabels" (dict "context" . "component" "test") }}
{{- end }}

{{/*
An object's `annotations:` block: commonAnnotations, with the object's own (`extra`) winning;
nothing when both are empty.
*/}}
{{- define "infra-observer.annotations" -}}
{{- with merge (deepCopy (.extra | default dict)) (deepCopy .context.Values.commonAnnotations) -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "infra-observer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "infra-observer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository, then @digest or :tag; global.imageRegistry wins over image.registry. */}}
{{- define "infra-observer.image" -}}
{{- $registry := default .Values.image.registry (.Values.global).imageRegistry }}
{{- $repository := .Values.image.repository }}
{{- if $registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Prefect credential's variable, Secret name and key; empty when there is none. */}}
{{- define "infra-observer.credentialEnvName" -}}
{{- if eq .Values.prefect.credentials.type "apiKey" }}PREFECT_API_KEY
{{- else if eq .Values.prefect.credentials.type "authString" }}PREFECT_API_AUTH_STRING
{{- end }}
{{- end }}

{{- define "infra-observer.credentialSecretName" -}}
{{- default (printf "%s-prefect" (include "infra-observer.fullname" .)) .Values.prefect.credentials.existingSecret }}
{{- end }}

{{- define "infra-observer.credentialSecretKey" -}}
{{- if .Values.prefect.credentials.secretKey }}
{{- .Values.prefect.credentials.secretKey }}
{{- else if eq .Values.prefect.credentials.type "apiKey" }}api-key
{{- else }}auth-string
{{- end }}
{{- end }}

{{- define "infra-observer.leaseName" -}}
{{- default (include "infra-observer.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "infra-observer.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{- define "infra-observer.spoolClaimName" -}}
{{- default (printf "%s-spool" (include "infra-observer.fullname" .)) .Values.spool.persistence.existingClaim }}
{{- end }}

{{/*
Cross-field checks the schema cannot express readably. Every message names the value
and the fix.
*/}}
{{- define "infra-observer.validate" -}}
{{- $creds := .Values.prefect.credentials }}
{{- if and (ne $creds.type "none") (not $creds.existingSecret) (not $creds.value) }}
{{- fail (printf "prefect.credentials.type is %q: set prefect.credentials.existingSecret (a Secret holding the credential) or prefect.credentials.value (the chart creates the Secret)" $creds.type) }}
{{- end }}
{{- if and (eq $creds.type "none") (or $creds.existingSecret $creds.value) }}
{{- fail "prefect.credentials.existingSecret or .value is set but prefect.credentials.type is \"none\": set type to apiKey (Prefect Cloud) or authString (basic auth)" }}
{{- end }}
{{- if and (ne $creds.type "none") (not .Values.prefect.apiUrl) }}
{{- fail "prefect.credentials are set but prefect.apiUrl is empty: set the Prefect API URL, e.g. https://api.prefect.cloud/api/accounts/<account>/workspaces/<workspace>" }}
{{- end }}
{{- if not (or .Values.kubernetes.enabled .Values.docker.enabled .Values.ecs.enabled) }}
{{- fail "no source is enabled: set kubernetes.enabled, docker.enabled or ecs.enabled to true" }}
{{- end }}
{{- if and .Values.ecs.enabled (not .Values.ecs.queueUrl) }}
{{- fail "ecs.enabled is true but ecs.queueUrl is empty: set the URL of the SQS queue EventBridge delivers ECS Task State Change events to" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.emitter.drainSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than emitter.drainSeconds (%v), or queued events are killed before they are delivered" .Values.terminationGracePeriodSeconds .Values.emitter.drainSeconds) }}
{{- end }}
{{- $reserved := list "PREFECT_API_KEY" "PREFECT_API_AUTH_STRING" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" }}
{{- range .Values.extraEnv }}
{{- if and (has .name $reserved) (hasKey . "value") }}
{{- fail (printf "extraEnv sets %s as a plain value: credentials belong in a Secret (prefect.credentials.existingSecret, aws.existingSecret, or valueFrom.secretKeyRef)" .name) }}
{{- end }}
{{- end }}
{{- if gt (int .Values.kubernetes.shards) 1 }}
{{- if not .Values.kubernetes.enabled }}
{{- fail "kubernetes.shards is above 1 but kubernetes.enabled is false: shards split the Kubernetes source" }}
{{- end }}
{{- if or .Values.docker.enabled .Values.ecs.enabled }}
{{- fail "kubernetes.shards is above 1 with the Docker or ECS source on: every shard would report them all; run those sources in a release of their own" }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- fail "kubernetes.shards and leaderElection.enabled exclude each other: shards already split the work, each pod reporting its own share" }}
{{- end }}
{{- if ne (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount is %v with kubernetes.shards %v: with shards the number of pods is kubernetes.shards; leave replicaCount at 1" .Values.replicaCount .Values.kubernetes.shards) }}
{{- end }}
{{- if and .Values.spool.enabled .Values.spool.persistence.enabled }}
{{- fail "spool.persistence with kubernetes.shards is not supported: each shard needs its own volume; use the emptyDir spool (spool.persistence.enabled=false)" }}
{{- end }}
{{- if not (semverCompare ">=1.28.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "kubernetes.shards needs Kubernetes 1.28 or later (the apps.kubernetes.io/pod-index label); this cluster is %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- include "infra-observer.validateConventions" . }}
{{- if and .Values.spool.enabled .Values.spool.persistence.enabled (not .Values.spool.persistence.existingClaim) (gt (int .Values.replicaCount) 1) }}
{{- fail "spool.persistence creates one PersistentVolumeClaim, which replicas cannot share: use replicaCount 1 or an existingClaim that allows it" }}
{{- end }}
{{- end }}

{{/* Label matchers of the daemon's series in the alert rules: by default the job the
ServiceMonitor gives them (the Service's name) in the release namespace. */}}
{{- define "infra-observer.ruleSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "infra-observer.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* (list SERIES WINDOW): the counter rose within the window. A labelled counter first
appears at 1, which increase() cannot see, so a series absent WINDOW ago counts too. */}}
{{- define "infra-observer.counterRose" -}}
{{- $series := index . 0 }}
{{- $window := index . 1 -}}
(increase({{ $series }}[{{ $window }}]) > 0 or ({{ $series }} unless {{ $series }} offset {{ $window }}))
{{- end }}


{{/* Checks of the values shared with other charts' conventions. */}}
{{- define "infra-observer.validateConventions" -}}
{{- range $key := list "app.kubernetes.io/name" "app.kubernetes.io/instance" }}
{{- if hasKey $.Values.commonLabels $key }}
{{- fail (printf "commonLabels sets %s, a label of the workload's selector, which cannot change after install: set nameOverride to rename the release's objects, or drop the key" $key) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and (ne (toString $pdb.minAvailable) "") (ne (toString $pdb.maxUnavailable) "") }}
{{- fail (printf "podDisruptionBudget sets both minAvailable (%v) and maxUnavailable (%v): a PodDisruptionBudget takes one of them; set the other to \"\"" $pdb.minAvailable $pdb.maxUnavailable) }}
{{- end }}
{{- if and (not .Values.serviceAccount.automount) (or .Values.kubernetes.enabled .Values.leaderElection.enabled) }}
{{- $tokenDir := "/var/run/secrets/kubernetes.io/serviceaccount" }}
{{- $mounted := false }}
{{- range .Values.extraVolumeMounts }}
{{- if eq (trimSuffix "/" (toString .mountPath)) $tokenDir }}{{ $mounted = true }}{{ end }}
{{- end }}
{{- if not $mounted }}
{{- fail (printf "serviceAccount.automount is false, but the Kubernetes source and leader election read the ServiceAccount's token from %s: mount a projected token there with extraVolumes and extraVolumeMounts, or set serviceAccount.automount to true" $tokenDir) }}
{{- end }}
{{- end }}
{{- end }}
