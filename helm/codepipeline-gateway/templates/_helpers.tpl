{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "cpgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else <release>-<chart> (just <release>
when it already contains the chart name).
*/}}
{{- define "cpgw.fullname" -}}
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

{{- define "cpgw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cpgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cpgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cpgw.labels" -}}
helm.sh/chart: {{ include "cpgw.chart" . }}
{{ include "cpgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codepipeline-gateway
{{- end }}

{{- define "cpgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cpgw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The gateway image: repository@digest when a digest is given (the tag is then not used), else
repository:tag (tag defaults to appVersion).
*/}}
{{- define "cpgw.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Where the binary sits in the image (the Dockerfile copies it there).
*/}}
{{- define "cpgw.binary" -}}/usr/local/bin/codepipeline-gateway{{- end }}

{{/*
Mount points of the Secrets and the files the gateway reads from them.
*/}}
{{- define "cpgw.authDir" -}}/etc/codepipeline-gateway/auth{{- end }}
{{- define "cpgw.tlsDir" -}}/etc/codepipeline-gateway/tls{{- end }}
{{- define "cpgw.clientCaDir" -}}/etc/codepipeline-gateway/client-ca{{- end }}
{{- define "cpgw.redisPasswordDir" -}}/etc/codepipeline-gateway/redis-password{{- end }}
{{- define "cpgw.redisCaDir" -}}/etc/codepipeline-gateway/redis-ca{{- end }}
{{- define "cpgw.clientTokensDir" -}}/etc/codepipeline-gateway/client-tokens{{- end }}

{{/*
Whether the rate limits are kept in Redis (rateLimit.backend: redis).
*/}}
{{- define "cpgw.redisEnabled" -}}
{{- if eq .Values.rateLimit.backend "redis" }}true{{- end }}
{{- end }}

{{/*
The Secret holding the Redis URL, and its key: redis.existingSecret / redis.urlKey, else the
chart's own Secret (written from redis.url) with the key `url`.
*/}}
{{- define "cpgw.redisUrlSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "cpgw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "cpgw.redisUrlSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.urlKey }}{{ else }}url{{ end }}
{{- end }}

{{/*
Whether the chart writes the Secret of the Redis URL (from redis.url).
*/}}
{{- define "cpgw.redisUrlSecretRendered" -}}
{{- if and (include "cpgw.redisEnabled" .) (not .Values.redis.existingSecret) .Values.redis.url }}true{{- end }}
{{- end }}

{{/*
The Redis key prefix: redis.keyPrefix, else one of this release's own, so that releases sharing a
Redis do not share their limits.
*/}}
{{- define "cpgw.redisKeyPrefix" -}}
{{- if .Values.redis.keyPrefix }}
{{- .Values.redis.keyPrefix }}
{{- else }}
{{- printf "codepipeline-gateway:%s/%s:" .Release.Namespace (include "cpgw.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Whether the gateway exports traces (tracing.otlpEndpoint).
*/}}
{{- define "cpgw.tracingEnabled" -}}
{{- if .Values.tracing.otlpEndpoint }}true{{- end }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES (`k=v,k=v`): k8s.namespace.name and k8s.pod.name, unless
tracing.resourceAttributes sets them, then tracing.resourceAttributes in key order. The pod's
name is `$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)`, which the kubelet expands from the downward-API
variable the Deployment sets just before.
*/}}
{{- define "cpgw.otelResourceAttributes" -}}
{{- $own := .Values.tracing.resourceAttributes | default dict }}
{{- $k8s := dict "k8s.namespace.name" .Release.Namespace "k8s.pod.name" "$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" }}
{{- $attributes := list }}
{{- range $key, $value := $k8s }}
{{- if not (hasKey $own $key) }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- end }}
{{- range $key, $value := $own }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}

{{/*
Whether the gateway container mounts any volume.
*/}}
{{- define "cpgw.hasVolumes" -}}
{{- if or (include "cpgw.tokenFileEnabled" .) .Values.tls.enabled .Values.thirdParty.clientTokens.existingSecret }}true{{- end }}
{{- if and (include "cpgw.redisEnabled" .) (or .Values.redis.passwordSecret .Values.redis.tlsCaSecret) }}true{{- end }}
{{- end }}

{{/*
Whether the gateway reads a token file: from auth.existingSecret or from auth.clients.
*/}}
{{- define "cpgw.tokenFileEnabled" -}}
{{- if or .Values.auth.existingSecret .Values.auth.clients }}true{{- end }}
{{- end }}

{{/*
The Secret holding the token file.
*/}}
{{- define "cpgw.tokenSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-tokens" (include "cpgw.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
mTLS: whether the client CA comes from a Secret other than the server certificate's.
*/}}
{{- define "cpgw.separateClientCa" -}}
{{- $ca := .Values.tls.clientAuth.caSecretName }}
{{- if and $ca (ne $ca .Values.tls.secretName) }}true{{- end }}
{{- end }}

{{- define "cpgw.clientCaFile" -}}
{{- if include "cpgw.separateClientCa" . }}
{{- printf "%s/%s" (include "cpgw.clientCaDir" .) .Values.tls.clientAuth.caKey }}
{{- else }}
{{- printf "%s/%s" (include "cpgw.tlsDir" .) .Values.tls.clientAuth.caKey }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value, else preStop sleep + lame duck + drain + 5s margin.
*/}}
{{- define "cpgw.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add .Values.preStopSleepSeconds .Values.server.lameDuckSeconds .Values.server.shutdownTimeoutSeconds 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express.
*/}}
{{- define "cpgw.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName: a Secret with tls.crt and tls.key" }}
{{- end }}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth.enabled (mTLS) needs tls.enabled" }}
{{- end }}
{{- $ids := dict }}
{{- $digests := dict }}
{{- range $client := .Values.auth.clients }}
{{- if hasKey $ids $client.id }}
{{- fail (printf "auth.clients: the id %q is used twice" $client.id) }}
{{- end }}
{{- $_ := set $ids $client.id true }}
{{- with $client.tokenSha256 }}
{{- if hasKey $digests (lower .) }}
{{- fail (printf "auth.clients: the tokenSha256 of %q is used by another client" $client.id) }}
{{- end }}
{{- $_ := set $digests (lower .) true }}
{{- end }}
{{- end }}
{{- if and (include "cpgw.redisEnabled" .) (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "rateLimit.backend: redis needs redis.url or redis.existingSecret (a Secret holding the URL)" }}
{{- end }}
{{- if and (eq .Values.upstream "emulator") .Values.autoscaling.enabled }}
{{- fail "upstream: emulator keeps its jobs in one pod's memory: autoscaling cannot be used with it" }}
{{- end }}
{{- end }}

{{/*
An IntOrString value: a count as an integer, a percentage ("50%") as a quoted string.
*/}}
{{- define "cpgw.intOrPercent" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}

{{/*
A size value as the gateway reads it: a string as written (`8MiB`), a number as an integer (a
YAML number reaches the template as a float, which `quote` would print as `1.6e+08`).
*/}}
{{- define "cpgw.size" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int64 . | toString | quote }}{{ end }}
{{- end }}
