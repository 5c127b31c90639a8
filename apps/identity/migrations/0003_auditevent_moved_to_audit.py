# The audit trail moved to apps.audit, rows and all: identity forgets the model, and its table
# is renamed for the audit app, which takes it over in audit 0001 (no data is copied).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('identity', '0002_member_checklist_dismissed_at'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterModelTable(name='AuditEvent', table='audit_auditevent'),
            ],
            state_operations=[
                migrations.DeleteModel(name='AuditEvent'),
            ],
        ),
    ]
