-- Argo CD health check for modelrollout.dev/ModelRollout.
-- Register it in argocd-cm under resource.customizations.health.modelrollout.dev_ModelRollout.
-- Progressing while the operator has not seen the latest spec or a rollout runs,
-- Suspended while paused, Healthy when the stable revision serves everything,
-- Degraded after a rollback, on an invalid spec, or when stable is not available.
local hs = {}

local function condition(type_)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type_ then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration == nil
    or obj.status.observedGeneration < (obj.metadata.generation or 0) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end

local invalid = condition("InvalidSpec")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. (invalid.message or "")
  return hs
end

local phase = obj.status.phase or "Pending"
local message = obj.status.message or phase

if phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "RollingBack" then
  hs.status = "Degraded"
elseif phase == "Succeeded" then
  local available = condition("Available")
  if available ~= nil and available.status == "False" then
    hs.status = "Degraded"
    message = "Stable revision not available: " .. (available.message or "")
  else
    hs.status = "Healthy"
  end
else
  hs.status = "Progressing"
end
hs.message = message
return hs
