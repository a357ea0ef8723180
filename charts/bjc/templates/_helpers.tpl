{{/*
The effective values: .Values with the Go controller chart's names applied where
their meaning is the same (docs/deployment.md lists the mapping). Every template
starts with: $v := include "bjc.values" . | fromYaml
*/}}
{{- define "bjc.values" -}}
{{- $v := .Values | toYaml | fromYaml -}}
{{- $go := $v.deployment | default dict -}}
{{- if hasKey $go "replicas" }}{{ $_ := set $v "replicas" $go.replicas }}{{ end -}}
{{- if $go.image }}{{ $_ := set $v.image "repository" $go.image }}{{ end -}}
{{- if $go.imageTag }}{{ $_ := set $v.image "tag" $go.imageTag }}{{ end -}}
{{- if $go.imagePullPolicy }}{{ $_ := set $v.image "pullPolicy" $go.imagePullPolicy }}{{ end -}}
{{- if $go.env }}{{ $_ := set $v "env" (merge (deepCopy $v.env) $go.env) }}{{ end -}}
{{- if $go.labels }}{{ $_ := set $v "podLabels" (merge (deepCopy $v.podLabels) $go.labels) }}{{ end -}}
{{- if $go.annotations }}{{ $_ := set $v "podAnnotations" (merge (deepCopy $v.podAnnotations) $go.annotations) }}{{ end -}}
{{- if $go.withPersistentVolume }}{{ $_ := set $v.reports "type" "newClaim" }}{{ end -}}
{{- if $go.storageClassName }}{{ $_ := set $v.reports.claim "storageClassName" $go.storageClassName }}{{ end -}}
{{- range $key := list "cronExpression" "reportHistory" "podPoolSize" "runOnStartup" "reportDirectory" -}}
{{- if hasKey $go $key }}{{ $_ := set $v.config $key (index $go $key) }}{{ end -}}
{{- end -}}
{{- if not (has $v.reports.type (list "emptyDir" "existingClaim" "newClaim")) -}}
{{- fail (printf "reports.type: %q is not emptyDir, existingClaim or newClaim" $v.reports.type) -}}
{{- end -}}
{{- if and (eq $v.reports.type "existingClaim") (not $v.reports.existingClaim) -}}
{{- fail "reports.existingClaim: the claim to mount (reports.type is existingClaim)" -}}
{{- end -}}
{{- toYaml $v -}}
{{- end -}}

{{- define "bjc.labels" -}}
app.kubernetes.io/name: bjc
{{- end -}}
