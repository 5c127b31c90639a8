# The audit trail, taken over from identity with its rows: identity 0003 renamed the table,
# so this takes the model into the audit app's state as it was, then opens the set of actions
# (no choices, longer names) and makes room for callers and purposes as other parts name them.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('identity', '0003_auditevent_moved_to_audit'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('action', models.CharField(max_length=20)),
                        ('actor', models.CharField(blank=True, max_length=64)),
                        ('subject', models.CharField(blank=True, max_length=100)),
                        ('detail', models.CharField(blank=True, max_length=300)),
                    ],
                    options={
                        'ordering': ['-at', '-id'],
                    },
                ),
            ],
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(max_length=40, validators=[django.core.validators.RegexValidator('^[a-z][a-z0-9_.]{0,39}$')]),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='subject',
            field=models.CharField(blank=True, max_length=200),
        ),
    ]
