# Register (or replace) the leakcheck Scheduled Task from leakcheck-task.xml.
# Intune Win32 app install command:
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File install-task.ps1
# Uninstall command: the same with -Uninstall.
# Status: never run on Windows (nothing in CI runs PowerShell); see
# packaging/README.md, "What has been verified".
param([switch]$Uninstall)
$ErrorActionPreference = 'Stop'
$name = 'leakcheck-run'
$path = '\leakcheck\'
if ($Uninstall) {
    Unregister-ScheduledTask -TaskName $name -TaskPath $path -Confirm:$false -ErrorAction SilentlyContinue
    exit 0
}
$xml = Get-Content -Raw -Path (Join-Path $PSScriptRoot 'leakcheck-task.xml')
Register-ScheduledTask -TaskName $name -TaskPath $path -Xml $xml -Force | Out-Null
# First run now rather than at the next quarter hour.
Start-ScheduledTask -TaskName $name -TaskPath $path
