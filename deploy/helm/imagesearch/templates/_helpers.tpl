{{/* Names and labels shared by every template. */}}
{{- define "imagesearch.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagesearch.selectorLabels" -}}
app.kubernetes.io/name: imagesearch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imagesearch.labels" -}}
{{ include "imagesearch.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "imagesearch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "imagesearch.redisUrl" -}}
{{- default (printf "redis://%s-redis:6379/0" .Release.Name) .Values.redis.url -}}
{{- end -}}

{{/* Peers that may reach a component: pods of the given components of this release. */}}
{{- define "imagesearch.peers" -}}
{{- range .components }}
- podSelector:
    matchLabels:
      {{- include "imagesearch.selectorLabels" (dict "root" $.root "component" .) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Wiring each service needs from the rest of the release (settings; values' env may add more). */}}
{{- define "imagesearch.wiring" -}}
{{- $r := .root -}}
{{- if eq .component "gateway" }}
# dns:/// over the headless Services: the gateway balances calls over every ready replica itself.
IMAGESEARCH_GATEWAY_ENCODER_ADDRESS: {{ printf "dns:///%s-encoder:%v" $r.Release.Name $r.Values.ports.grpc }}
IMAGESEARCH_GATEWAY_SEARCH_ADDRESS: {{ printf "dns:///%s-search:%v" $r.Release.Name $r.Values.ports.grpc }}
{{- if $r.Values.redis.enabled }}
IMAGESEARCH_GATEWAY_RATE_LIMIT_BACKEND: redis
IMAGESEARCH_GATEWAY_RATE_LIMIT_REDIS_URL: {{ include "imagesearch.redisUrl" $r }}
{{- end }}
{{- else if eq .component "encoder" }}
IMAGESEARCH_ENCODER_BACKEND: triton
IMAGESEARCH_ENCODER_TRITON_GRPC_URL: {{ printf "dns:///%s-triton:%v" $r.Release.Name $r.Values.triton.grpcPort }}
{{- else if eq .component "search" }}
IMAGESEARCH_SEARCH_BACKEND: weaviate
IMAGESEARCH_SEARCH_WEAVIATE_HOST: {{ printf "%s-weaviate" $r.Release.Name }}
IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT: {{ $r.Values.weaviate.httpPort | quote }}
IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT: {{ $r.Values.weaviate.grpcPort | quote }}
IMAGESEARCH_SEARCH_CACHE: redis
IMAGESEARCH_SEARCH_REDIS_URL: {{ include "imagesearch.redisUrl" $r }}
{{- end }}
{{- end -}}
