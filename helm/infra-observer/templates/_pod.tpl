{{/* The pod template shared by the Deployment and, for shards, the StatefulSet. */}}
{{- define "infra-observer.podTemplate" -}}
{{- $credentialEnv := include "infra-observer.credentialEnvName" . -}}
metadata:
  labels:
    {{- include "infra-observer.selectorLabels" . | nindent 4 }}
    {{- include "infra-observer.sharedLabels" (dict "context" . "component" "observer" "extra" .Values.podLabels) | nindent 4 }}
  annotations:
    # A changed credential the chart manages rolls the pods.
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "infra-observer.serviceAccountName" . }}
  # The token is only needed by the Kubernetes source and leader election.
  automountServiceAccountToken: {{ and .Values.serviceAccount.automount (or .Values.kubernetes.enabled .Values.leaderElection.enabled) }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  # No *_SERVICE_HOST/*_PORT variables for every Service in the namespace: the daemon is
  # configured by environment, and a Service named infra-observer would add INFRA_OBSERVER_*.
  enableServiceLinks: false
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: infra-observer
      image: {{ include "infra-observer.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ .Values.health.port }}
          protocol: TCP
      env:
        {{- with .Values.prefect.apiUrl }}
        - name: PREFECT_API_URL
          value: {{ . | quote }}
        {{- end }}
        {{- if $credentialEnv }}
        - name: {{ $credentialEnv }}
          valueFrom:
            secretKeyRef:
              name: {{ include "infra-observer.credentialSecretName" . }}
              key: {{ include "infra-observer.credentialSecretKey" . }}
        {{- end }}
        {{- if .Values.prefect.caBundle.configMap }}
        - name: INFRA_OBSERVER_EMITTER_CA_BUNDLE
          value: /etc/infra-observer/ca/{{ .Values.prefect.caBundle.key }}
        {{- end }}
        - name: INFRA_OBSERVER_EMITTER_DRAIN_SECONDS
          value: {{ .Values.emitter.drainSeconds | quote }}
        - name: INFRA_OBSERVER_EMITTER_QUEUE_SIZE
          value: {{ .Values.emitter.queueSize | int64 | quote }}
        - name: INFRA_OBSERVER_EMITTER_BATCH_MAX_EVENTS
          value: {{ .Values.emitter.batchMaxEvents | int64 | quote }}
        {{- if .Values.spool.enabled }}
        - name: INFRA_OBSERVER_EMITTER_SPOOL_DIR
          value: {{ .Values.spool.directory | quote }}
        - name: INFRA_OBSERVER_EMITTER_SPOOL_MAX_BYTES
          value: {{ .Values.spool.maxBytes | int64 | quote }}
        {{- end }}
        - name: INFRA_OBSERVER_LOG_LEVEL
          value: {{ .Values.log.level | quote }}
        - name: INFRA_OBSERVER_LOG_FORMAT
          value: {{ .Values.log.format | quote }}
        # Probes and scrapes come from outside the pod.
        - name: INFRA_OBSERVER_HEALTH_HOST
          value: "0.0.0.0"
        - name: INFRA_OBSERVER_HEALTH_PORT
          value: {{ .Values.health.port | int64 | quote }}
        - name: INFRA_OBSERVER_KUBERNETES_ENABLED
          value: {{ .Values.kubernetes.enabled | quote }}
        {{- if .Values.kubernetes.enabled }}
        - name: INFRA_OBSERVER_KUBERNETES_NAMESPACES
          value: {{ uniq .Values.kubernetes.namespaces | join "," | quote }}
        {{- if gt (int .Values.kubernetes.shards) 1 }}
        - name: INFRA_OBSERVER_KUBERNETES_SHARD_COUNT
          value: {{ .Values.kubernetes.shards | int64 | quote }}
        # The StatefulSet's ordinal of this pod: 0 .. shards - 1.
        - name: INFRA_OBSERVER_KUBERNETES_SHARD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        {{- with .Values.kubernetes.labelSelector }}
        - name: INFRA_OBSERVER_KUBERNETES_LABEL_SELECTOR
          value: {{ . | quote }}
        {{- end }}
        {{- end }}
        - name: INFRA_OBSERVER_LIFECYCLE_ENABLED
          value: {{ .Values.lifecycle.enabled | quote }}
        {{- if .Values.lifecycle.enabled }}
        - name: INFRA_OBSERVER_LIFECYCLE_PROPOSE_PENDING
          value: {{ .Values.lifecycle.proposePending | quote }}
        - name: INFRA_OBSERVER_LIFECYCLE_PROPOSE_CRASHED
          value: {{ .Values.lifecycle.proposeCrashed | quote }}
        - name: INFRA_OBSERVER_LIFECYCLE_DIAGNOSIS_LOGS
          value: {{ .Values.lifecycle.diagnosisLogs | quote }}
        - name: INFRA_OBSERVER_LIFECYCLE_CRASH_LOG_LINES
          value: {{ .Values.lifecycle.crashLogLines | int64 | quote }}
        - name: INFRA_OBSERVER_LIFECYCLE_QUEUE_SIZE
          value: {{ .Values.lifecycle.queueSize | int64 | quote }}
        {{- end }}
        - name: INFRA_OBSERVER_DOCKER_ENABLED
          value: {{ .Values.docker.enabled | quote }}
        {{- if .Values.docker.enabled }}
        {{- with .Values.docker.host }}
        - name: INFRA_OBSERVER_DOCKER_HOST
          value: {{ . | quote }}
        {{- end }}
        {{- if .Values.docker.tlsSecret }}
        - name: INFRA_OBSERVER_DOCKER_TLS_VERIFY
          value: "true"
        - name: INFRA_OBSERVER_DOCKER_CERT_PATH
          value: /etc/infra-observer/docker-tls
        {{- end }}
        {{- with .Values.docker.labelFilters }}
        - name: INFRA_OBSERVER_DOCKER_LABEL_FILTERS
          value: {{ join "," . | quote }}
        {{- end }}
        {{- with .Values.docker.workerName }}
        - name: INFRA_OBSERVER_DOCKER_WORKER_NAME
          value: {{ . | quote }}
        {{- end }}
        {{- if .Values.docker.markCrashed }}
        - name: INFRA_OBSERVER_DOCKER_MARK_CRASHED
          value: "true"
        {{- end }}
        {{- end }}
        - name: INFRA_OBSERVER_ECS_ENABLED
          value: {{ .Values.ecs.enabled | quote }}
        {{- if .Values.ecs.enabled }}
        - name: INFRA_OBSERVER_ECS_QUEUE_URL
          value: {{ .Values.ecs.queueUrl | quote }}
        {{- with .Values.ecs.region }}
        - name: INFRA_OBSERVER_ECS_REGION
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.ecs.endpointUrl }}
        - name: INFRA_OBSERVER_ECS_ENDPOINT_URL
          value: {{ . | quote }}
        {{- end }}
        - name: INFRA_OBSERVER_ECS_CONCURRENCY
          value: {{ .Values.ecs.concurrency | int64 | quote }}
        {{- with .Values.ecs.tagFilters }}
        - name: INFRA_OBSERVER_ECS_TAG_FILTERS
          value: {{ join "," . | quote }}
        {{- end }}
        {{- with .Values.aws.existingSecret }}
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: AWS_ACCESS_KEY_ID
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: AWS_SECRET_ACCESS_KEY
        - name: AWS_SESSION_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: AWS_SESSION_TOKEN
              optional: true
        {{- end }}
        {{- end }}
        {{- if .Values.leaderElection.enabled }}
        - name: INFRA_OBSERVER_LEADER_ELECTION_ENABLED
          value: "true"
        - name: INFRA_OBSERVER_LEADER_ELECTION_LEASE_NAME
          value: {{ include "infra-observer.leaseName" . | quote }}
        - name: INFRA_OBSERVER_LEADER_ELECTION_NAMESPACE
          value: {{ include "infra-observer.leaseNamespace" . | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # /healthz answers as soon as the health server listens, before the sources sync:
      # this gives a slow start time without delaying liveness checks for the rest of the
      # pod's life, and never restarts a pod that waits for the events API.
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.startupProbe | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        # The root filesystem is read-only; libraries that want a scratch file get this.
        - name: tmp
          mountPath: /tmp
        {{- if .Values.prefect.caBundle.configMap }}
        - name: prefect-ca
          mountPath: /etc/infra-observer/ca
          readOnly: true
        {{- end }}
        {{- if and .Values.docker.enabled .Values.docker.tlsSecret }}
        - name: docker-tls
          mountPath: /etc/infra-observer/docker-tls
          readOnly: true
        {{- end }}
        {{- if and .Values.docker.enabled .Values.docker.socketHostPath }}
        - name: docker-socket
          mountPath: /var/run/docker.sock
        {{- end }}
        {{- if .Values.spool.enabled }}
        - name: spool
          mountPath: {{ .Values.spool.directory }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if .Values.prefect.caBundle.configMap }}
    - name: prefect-ca
      configMap:
        name: {{ .Values.prefect.caBundle.configMap }}
    {{- end }}
    {{- if and .Values.docker.enabled .Values.docker.tlsSecret }}
    - name: docker-tls
      secret:
        secretName: {{ .Values.docker.tlsSecret }}
    {{- end }}
    {{- if and .Values.docker.enabled .Values.docker.socketHostPath }}
    - name: docker-socket
      hostPath:
        path: {{ .Values.docker.socketHostPath }}
        type: Socket
    {{- end }}
    {{- if .Values.spool.enabled }}
    - name: spool
      {{- if .Values.spool.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ include "infra-observer.spoolClaimName" . }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ .Values.spool.sizeLimit }}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
