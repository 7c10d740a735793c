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
helm.sh/chart: {{ include "infra-observer.chart" . }}
{{ include "infra-observer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: observer
app.kubernetes.io/part-of: infra-observer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "infra-observer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "infra-observer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "infra-observer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
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

